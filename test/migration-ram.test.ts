/** The RAM check of the migration test (src/guest/migration.ts comparePages), on made-up images. */
import { describe, expect, it } from 'vitest';
import { comparePages } from '../src/guest/migration.js';

describe('comparePages', () => {
  const a = Buffer.alloc(4 * 4096, 0x11);
  it('finds no page when the images are equal', () => {
    expect(comparePages(a, Buffer.from(a), [])).toEqual({ pages: 4, differing: [], count: 0, ringPages: [] });
  });
  it('names each differing page, and those a vring range touches', () => {
    const b = Buffer.from(a);
    b[0x2fff] = 0; // last byte of page 2
    b[0x3000] = 0; // first byte of page 3
    // A ring that ends where page 2 begins does not touch it; one that starts inside page 3 does.
    const rings = [
      { start: 0x1000n, end: 0x2000n },
      { start: 0x3100n, end: 0x3200n },
    ];
    expect(comparePages(a, b, rings)).toEqual({
      pages: 4,
      differing: ['0x2000', '0x3000'],
      count: 2,
      ringPages: ['0x3000'],
    });
  });
});
