import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // The package's own name, as a user imports it (docs/faults.md's example test).
  resolve: {
    alias: {
      'vhost-user-net/guest': fileURLToPath(new URL('./src/guest/guest.ts', import.meta.url)),
      'vhost-user-net': fileURLToPath(new URL('./src/api.ts', import.meta.url)),
    },
  },
  test: {
    // Forks, not threads: the native addon is loaded once per process and owns fds.
    pool: 'forks',
    include: ['test/**/*.test.ts', 'guest-tests/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // The interop and guest tests start QEMU and testpmd: one file at a time on 2 cores.
    fileParallelism: false,
  },
});
