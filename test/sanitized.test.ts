/**
 * Which build of the addon the tests run against. `npm run test:asan` sets VUN_NATIVE_ADDON to
 * the ASan + UBSan build and preloads the sanitizer runtime: this file fails that run if the
 * normal addon was loaded instead, or if the runtime is not in the process.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native } from './helpers/harness.js';

describe('the addon under test', () => {
  if (process.env.VUN_NATIVE_ADDON) {
    it('is the sanitized build, with the ASan runtime in the process', () => {
      expect(native.sanitizers.split(',').sort()).toEqual(['address', 'undefined']);
      expect(readFileSync('/proc/self/maps', 'utf8')).toMatch(/libclang_rt\.asan/);
    });
  } else {
    it('is the normal build', () => {
      expect(native.sanitizers).toBe('');
    });
  }
});
