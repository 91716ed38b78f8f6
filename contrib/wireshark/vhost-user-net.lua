-- vhost-user-net.lua: a Wireshark/tshark dissector for vhost-user-net captures (--pcap).
--
-- A capture has, next to the plain Ethernet interfaces (receiveqN, transmitqN):
--   * receiveqN-vnet / transmitqN-vnet, link type LINKTYPE_USER0 (147): the 12-byte
--     virtio-net header (virtio 1.2 section 5.1.6, struct virtio_net_hdr), then the frame;
--     LINKTYPE_USER1 (148): the same with the 10-byte legacy header (no num_buffers);
--   * vhost-user, link type LINKTYPE_USER2 (149): an 8-byte capture header (u8 version = 1,
--     u8 direction 0 front-end->backend / 1 backend->front-end, u16 fds the message carried,
--     u32 session), then the message as on the socket (QEMU docs/interop/vhost-user.rst,
--     "Message Specification": u32 request, u32 flags, u32 size, payload).
--
-- Load it:  tshark -X lua_script:contrib/wireshark/vhost-user-net.lua -r FILE
--      or copy it to ~/.local/lib/wireshark/plugins/ (Wireshark's personal Lua plugins).
-- Filters:  virtio_net.gso_type == 4, virtio_net.num_buffers > 1, vhost_user.request == 2,
--           vhost_user.vring.index == 1, vhost_user.feature == "F_RING_PACKED".

---------------------------------------------------------------------------------------------
-- virtio-net header
---------------------------------------------------------------------------------------------
local vnet = Proto("virtio_net", "virtio-net header")

local GSO_TYPES = {
  [0] = "NONE", [1] = "TCPV4", [3] = "UDP", [4] = "TCPV6", [5] = "UDP_L4",
  [0x80] = "NONE|ECN", [0x81] = "TCPV4|ECN", [0x84] = "TCPV6|ECN",
}

local vf = {
  flags       = ProtoField.uint8("virtio_net.flags", "flags", base.HEX),
  needs_csum  = ProtoField.bool("virtio_net.flags.needs_csum", "NEEDS_CSUM", 8, nil, 0x01),
  data_valid  = ProtoField.bool("virtio_net.flags.data_valid", "DATA_VALID", 8, nil, 0x02),
  rsc_info    = ProtoField.bool("virtio_net.flags.rsc_info", "RSC_INFO", 8, nil, 0x04),
  gso_type    = ProtoField.uint8("virtio_net.gso_type", "gso_type", base.DEC, GSO_TYPES),
  hdr_len     = ProtoField.uint16("virtio_net.hdr_len", "hdr_len", base.DEC),
  gso_size    = ProtoField.uint16("virtio_net.gso_size", "gso_size", base.DEC),
  csum_start  = ProtoField.uint16("virtio_net.csum_start", "csum_start", base.DEC),
  csum_offset = ProtoField.uint16("virtio_net.csum_offset", "csum_offset", base.DEC),
  num_buffers = ProtoField.uint16("virtio_net.num_buffers", "num_buffers", base.DEC),
}
vnet.fields = vf

local eth = Dissector.get("eth_withoutfcs")

function vnet.dissector(tvb, pinfo, tree)
  -- Which user link type matched: USER1 is the legacy 10-byte header.
  local hlen = (pinfo.match_uint == wtap.USER1) and 10 or 12
  if tvb:len() < hlen then return 0 end
  local t = tree:add(vnet, tvb(0, hlen))
  local flags = t:add(vf.flags, tvb(0, 1))
  flags:add(vf.needs_csum, tvb(0, 1))
  flags:add(vf.data_valid, tvb(0, 1))
  flags:add(vf.rsc_info, tvb(0, 1))
  t:add(vf.gso_type, tvb(1, 1))
  -- Little-endian: virtio 1.x fields are le16 (section 5.1.6); legacy x86 guests too.
  t:add_le(vf.hdr_len, tvb(2, 2))
  t:add_le(vf.gso_size, tvb(4, 2))
  t:add_le(vf.csum_start, tvb(6, 2))
  t:add_le(vf.csum_offset, tvb(8, 2))
  if hlen >= 12 then t:add_le(vf.num_buffers, tvb(10, 2)) end
  local gso = tvb(1, 1):uint()
  t:append_text(string.format(", gso %s%s", GSO_TYPES[gso] or string.format("0x%02x", gso),
    (tvb(0, 1):uint() % 2 == 1) and ", NEEDS_CSUM" or ""))
  if tvb:len() > hlen then eth:call(tvb(hlen):tvb(), pinfo, tree) end
  return tvb:len()
end

---------------------------------------------------------------------------------------------
-- vhost-user messages
---------------------------------------------------------------------------------------------
local vu = Proto("vhost_user", "vhost-user message")

local REQUESTS = {
  [1] = "GET_FEATURES", [2] = "SET_FEATURES", [3] = "SET_OWNER", [4] = "RESET_OWNER",
  [5] = "SET_MEM_TABLE", [6] = "SET_LOG_BASE", [7] = "SET_LOG_FD", [8] = "SET_VRING_NUM",
  [9] = "SET_VRING_ADDR", [10] = "SET_VRING_BASE", [11] = "GET_VRING_BASE",
  [12] = "SET_VRING_KICK", [13] = "SET_VRING_CALL", [14] = "SET_VRING_ERR",
  [15] = "GET_PROTOCOL_FEATURES", [16] = "SET_PROTOCOL_FEATURES", [17] = "GET_QUEUE_NUM",
  [18] = "SET_VRING_ENABLE", [19] = "SEND_RARP", [20] = "NET_SET_MTU",
  [21] = "SET_BACKEND_REQ_FD", [22] = "IOTLB_MSG", [23] = "SET_VRING_ENDIAN",
  [24] = "GET_CONFIG", [25] = "SET_CONFIG", [26] = "CREATE_CRYPTO_SESSION",
  [27] = "CLOSE_CRYPTO_SESSION", [28] = "POSTCOPY_ADVISE", [29] = "POSTCOPY_LISTEN",
  [30] = "POSTCOPY_END", [31] = "GET_INFLIGHT_FD", [32] = "SET_INFLIGHT_FD",
  [33] = "GPU_SET_SOCKET", [34] = "RESET_DEVICE", [35] = "VRING_KICK",
  [36] = "GET_MAX_MEM_SLOTS", [37] = "ADD_MEM_REG", [38] = "REM_MEM_REG",
  [39] = "SET_STATUS", [40] = "GET_STATUS", [41] = "GET_SHARED_OBJECT",
  [42] = "SET_DEVICE_STATE_FD", [43] = "CHECK_DEVICE_STATE",
}

-- Requests answered with a payload of their own; any other reply is a REPLY_ACK status.
local OWN_REPLY = {
  GET_FEATURES = true, GET_PROTOCOL_FEATURES = true, GET_VRING_BASE = true,
  GET_QUEUE_NUM = true, GET_CONFIG = true, GET_INFLIGHT_FD = true,
  GET_MAX_MEM_SLOTS = true, GET_STATUS = true, GET_SHARED_OBJECT = true,
  SET_DEVICE_STATE_FD = true, CHECK_DEVICE_STATE = true,
}

local VIRTIO_FEATURES = {
  [0] = "NET_F_CSUM", [1] = "NET_F_GUEST_CSUM", [2] = "NET_F_CTRL_GUEST_OFFLOADS",
  [3] = "NET_F_MTU", [5] = "NET_F_MAC", [7] = "NET_F_GUEST_TSO4", [8] = "NET_F_GUEST_TSO6",
  [9] = "NET_F_GUEST_ECN", [10] = "NET_F_GUEST_UFO", [11] = "NET_F_HOST_TSO4",
  [12] = "NET_F_HOST_TSO6", [13] = "NET_F_HOST_ECN", [14] = "NET_F_HOST_UFO",
  [15] = "NET_F_MRG_RXBUF", [16] = "NET_F_STATUS", [17] = "NET_F_CTRL_VQ",
  [18] = "NET_F_CTRL_RX", [19] = "NET_F_CTRL_VLAN", [21] = "NET_F_GUEST_ANNOUNCE",
  [22] = "NET_F_MQ", [23] = "NET_F_CTRL_MAC_ADDR", [24] = "F_NOTIFY_ON_EMPTY",
  [26] = "VHOST_F_LOG_ALL", [27] = "F_ANY_LAYOUT", [28] = "RING_F_INDIRECT_DESC",
  [29] = "RING_F_EVENT_IDX", [30] = "VHOST_USER_F_PROTOCOL_FEATURES", [32] = "F_VERSION_1",
  [33] = "F_ACCESS_PLATFORM", [34] = "F_RING_PACKED", [35] = "F_IN_ORDER",
  [36] = "F_ORDER_PLATFORM", [37] = "F_SR_IOV", [38] = "F_NOTIFICATION_DATA",
  [54] = "NET_F_GUEST_USO4", [55] = "NET_F_GUEST_USO6", [56] = "NET_F_HOST_USO",
  [57] = "NET_F_HASH_REPORT", [59] = "NET_F_GUEST_HDRLEN", [60] = "NET_F_RSS",
  [61] = "NET_F_RSC_EXT", [62] = "NET_F_STANDBY",
}

local PROTOCOL_FEATURES = {
  [0] = "MQ", [1] = "LOG_SHMFD", [2] = "RARP", [3] = "REPLY_ACK", [4] = "NET_MTU",
  [5] = "BACKEND_REQ", [6] = "CROSS_ENDIAN", [7] = "CRYPTO_SESSION", [8] = "PAGEFAULT",
  [9] = "CONFIG", [10] = "BACKEND_SEND_FD", [11] = "HOST_NOTIFIER", [12] = "INFLIGHT_SHMFD",
  [13] = "RESET_DEVICE", [14] = "INBAND_NOTIFICATIONS", [15] = "CONFIGURE_MEM_SLOTS",
  [16] = "STATUS", [17] = "XEN_MMAP", [18] = "SHARED_OBJECT", [19] = "DEVICE_STATE",
}

local DIRECTIONS = { [0] = "front-end->backend", [1] = "backend->front-end" }

local uf = {
  version      = ProtoField.uint8("vhost_user.capture_version", "capture header version", base.DEC),
  direction    = ProtoField.uint8("vhost_user.direction", "direction", base.DEC, DIRECTIONS),
  fds          = ProtoField.uint16("vhost_user.fds", "file descriptors carried", base.DEC),
  session      = ProtoField.uint32("vhost_user.session", "session", base.DEC),
  request      = ProtoField.uint32("vhost_user.request", "request", base.DEC, REQUESTS),
  flags        = ProtoField.uint32("vhost_user.flags", "flags", base.HEX),
  fl_version   = ProtoField.uint32("vhost_user.flags.version", "version", base.DEC, nil, 0x3),
  fl_reply     = ProtoField.bool("vhost_user.flags.reply", "REPLY", 32, nil, 0x4),
  fl_need      = ProtoField.bool("vhost_user.flags.need_reply", "NEED_REPLY", 32, nil, 0x8),
  size         = ProtoField.uint32("vhost_user.size", "size", base.DEC),
  features     = ProtoField.uint64("vhost_user.features", "virtio features", base.HEX),
  protocol     = ProtoField.uint64("vhost_user.protocol_features", "protocol features", base.HEX),
  feature      = ProtoField.string("vhost_user.feature", "feature"),
  u64          = ProtoField.uint64("vhost_user.u64", "value", base.DEC),
  ack          = ProtoField.uint64("vhost_user.ack", "REPLY_ACK status (0: success)", base.DEC),
  vr_index     = ProtoField.uint32("vhost_user.vring.index", "vring index", base.DEC),
  vr_num       = ProtoField.uint32("vhost_user.vring.num", "num", base.DEC),
  vr_flags     = ProtoField.uint32("vhost_user.vring.flags", "flags (bit 0: VHOST_VRING_F_LOG)", base.HEX),
  vr_desc      = ProtoField.uint64("vhost_user.vring.desc", "descriptor table (user address)", base.HEX),
  vr_used      = ProtoField.uint64("vhost_user.vring.used", "used ring (user address)", base.HEX),
  vr_avail     = ProtoField.uint64("vhost_user.vring.avail", "available ring (user address)", base.HEX),
  vr_log       = ProtoField.uint64("vhost_user.vring.log", "log (guest address)", base.HEX),
  vr_nofd      = ProtoField.bool("vhost_user.vring.nofd", "no fd (bit 8: VHOST_USER_VRING_NOFD_MASK)"),
  nregions     = ProtoField.uint32("vhost_user.nregions", "regions", base.DEC),
  reg_gpa      = ProtoField.uint64("vhost_user.region.guest_addr", "guest physical address", base.HEX),
  reg_size     = ProtoField.uint64("vhost_user.region.size", "size", base.HEX),
  reg_uaddr    = ProtoField.uint64("vhost_user.region.user_addr", "user address (QEMU)", base.HEX),
  reg_offset   = ProtoField.uint64("vhost_user.region.mmap_offset", "mmap offset", base.HEX),
  log_size     = ProtoField.uint64("vhost_user.log.mmap_size", "log mmap size", base.HEX),
  log_offset   = ProtoField.uint64("vhost_user.log.mmap_offset", "log mmap offset", base.HEX),
  mac          = ProtoField.ether("vhost_user.mac", "MAC"),
  payload      = ProtoField.bytes("vhost_user.payload", "payload"),
}
vu.fields = uf

-- Each set bit of a feature mask, named, as a `vhost_user.feature` item.
local function feature_bits(item, tvb, names)
  local lo, hi = tvb(0, 4):le_uint(), tvb(4, 4):le_uint()
  for bit = 0, 63 do
    local word, b = (bit < 32) and lo or hi, bit % 32
    if math.floor(word / 2 ^ b) % 2 == 1 then
      item:add(uf.feature, tvb, names[bit] or string.format("bit %d", bit))
    end
  end
end

local function region(t, tvb)
  local r = t:add(vu, tvb(0, 32), "memory region")
  r:set_text("memory region")
  r:add_le(uf.reg_gpa, tvb(0, 8))
  r:add_le(uf.reg_size, tvb(8, 8))
  r:add_le(uf.reg_uaddr, tvb(16, 8))
  r:add_le(uf.reg_offset, tvb(24, 8))
end

-- The payload by request (vhost-user.rst "Message types" / each request's payload).
local function payload(t, p, name, is_reply)
  local n = p:len()
  if n == 0 then return end
  if is_reply and not OWN_REPLY[name] and n == 8 then
    t:add_le(uf.ack, p(0, 8))
  elseif (name == "GET_FEATURES" or name == "SET_FEATURES") and n >= 8 then
    feature_bits(t:add_le(uf.features, p(0, 8)), p(0, 8), VIRTIO_FEATURES)
  elseif (name == "GET_PROTOCOL_FEATURES" or name == "SET_PROTOCOL_FEATURES") and n >= 8 then
    feature_bits(t:add_le(uf.protocol, p(0, 8)), p(0, 8), PROTOCOL_FEATURES)
  elseif (name == "SET_VRING_NUM" or name == "SET_VRING_BASE" or name == "GET_VRING_BASE"
          or name == "SET_VRING_ENABLE") and n >= 8 then
    t:add_le(uf.vr_index, p(0, 4))
    t:add_le(uf.vr_num, p(4, 4))
  elseif name == "SET_VRING_ADDR" and n >= 40 then
    t:add_le(uf.vr_index, p(0, 4))
    t:add_le(uf.vr_flags, p(4, 4))
    t:add_le(uf.vr_desc, p(8, 8))
    t:add_le(uf.vr_used, p(16, 8))
    t:add_le(uf.vr_avail, p(24, 8))
    t:add_le(uf.vr_log, p(32, 8))
  elseif (name == "SET_VRING_KICK" or name == "SET_VRING_CALL" or name == "SET_VRING_ERR")
         and n >= 8 then
    -- u64: bits 0-7 the vring index, bit 8 set when no fd is passed (polling).
    t:add_le(uf.vr_index, p(0, 4), p(0, 1):uint())
    t:add(uf.vr_nofd, p(1, 1), p(1, 1):uint() % 2 == 1)
  elseif name == "SET_MEM_TABLE" and n >= 8 then
    local count = p(0, 4):le_uint()
    t:add_le(uf.nregions, p(0, 4))
    for i = 0, count - 1 do
      if 8 + 32 * (i + 1) <= n then region(t, p(8 + 32 * i, 32)) end
    end
  elseif (name == "ADD_MEM_REG" or name == "REM_MEM_REG") and n >= 40 then
    region(t, p(8, 32))
  elseif name == "SET_LOG_BASE" and n >= 16 then
    t:add_le(uf.log_size, p(0, 8))
    t:add_le(uf.log_offset, p(8, 8))
  elseif name == "SEND_RARP" and n >= 6 then
    t:add(uf.mac, p(0, 6))
  elseif n == 8 then
    -- GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, NET_SET_MTU, SET_STATUS, GET_STATUS, ...
    t:add_le(uf.u64, p(0, 8))
  else
    t:add(uf.payload, p)
  end
end

function vu.dissector(tvb, pinfo, tree)
  if tvb:len() < 20 then return 0 end
  pinfo.cols.protocol = "vhost-user"
  local t = tree:add(vu, tvb())
  t:add(uf.version, tvb(0, 1))
  t:add(uf.direction, tvb(1, 1))
  t:add_le(uf.fds, tvb(2, 2))
  t:add_le(uf.session, tvb(4, 4))
  local m = tvb(8):tvb()
  local req = m(0, 4):le_uint()
  local flags = m(4, 4):le_uint()
  local name = REQUESTS[req] or string.format("request %d", req)
  local is_reply = math.floor(flags / 4) % 2 == 1
  t:add_le(uf.request, m(0, 4))
  local f = t:add_le(uf.flags, m(4, 4))
  f:add_le(uf.fl_version, m(4, 4))
  f:add_le(uf.fl_reply, m(4, 4))
  f:add_le(uf.fl_need, m(4, 4))
  t:add_le(uf.size, m(8, 4))
  local fds = tvb(2, 2):le_uint()
  if m:len() > 12 then payload(t, m(12):tvb(), name, is_reply) end
  local info = string.format("%s %s%s%s", is_reply and "<-" or "->", name, is_reply and " reply" or "",
    fds > 0 and string.format(" +%d fd", fds) or "")
  pinfo.cols.info = info
  t:append_text(": " .. info)
  return tvb:len()
end

local encap = DissectorTable.get("wtap_encap")
encap:add(wtap.USER0, vnet)
encap:add(wtap.USER1, vnet)
encap:add(wtap.USER2, vu)
