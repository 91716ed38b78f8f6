{
  "targets": [
    {
      "target_name": "vhost_user_net",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/poller.cc",
        "native/sockets.cc",
        "native/memory.cc",
        "native/memory_fault.cc",
        "native/eventfd.cc",
        "native/host.cc",
        "native/net_device.cc",
        "native/net_device_observe.cc",
        "native/net_device_vrings.cc",
        "native/queue_pair.cc",
        "native/queue_pair_receive.cc",
        "native/pair_faults.cc",
        "native/worker_thread.cc",
        "native/steering.cc",
        "native/host_port.cc",
        "native/test_surface.cc",
        "native/machine_costs.cc"
      ],
      "libraries": ["-luring"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=gnu++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2", "-fvisibility=hidden"]
    }
  ]
}
