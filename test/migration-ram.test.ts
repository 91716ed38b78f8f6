/** The RAM check of the migration test (src/guest/migration.ts comparePages), on made-up images. */
import { describe, expect, it } from 'vitest';
import { comparePages } from '../src/guest/migration.js';

describe('comparePages', () => {
  const a = Buffer.alloc(4 * 4096, 0x11);
  it('finds no page when the images are equal', () => {
    expect(comparePages(a, Buffer.from(a), [])).toEqual({
      pages: 4,
      differing: [],
      count: 0,
      ringPages: [],
      ringBytes: [],
      deviceRingPages: [],
    });
  });
  it('names each differing page, and those a vring range touches', () => {
    const b = Buffer.from(a);
    b[0x2fff] = 0; // last byte of page 2
    b[0x3000] = 0; // first byte of page 3
    // A ring that ends where page 2 begins does not touch it; one that starts inside page 3 does.
    const rings = [
      { start: 0x1000n, end: 0x2000n, name: 'q0.desc', device: false },
      { start: 0x3100n, end: 0x3200n, name: 'q0.avail', device: false },
    ];
    expect(comparePages(a, b, rings)).toEqual({
      pages: 4,
      differing: ['0x2000', '0x3000'],
      count: 2,
      ringPages: ['0x3000'],
      ringBytes: [{ page: '0x3000', parts: { outside: 1 } }],
      deviceRingPages: [],
    });
  });
  it('counts the differing bytes of a ring page by part, and names the page when a used ring byte differs', () => {
    // Page 1 holds q0's avail ring and, after it, q0's used ring (as Linux lays out a split ring).
    const rings = [
      { start: 0x1000n, end: 0x1206n, name: 'q0.avail', device: false },
      { start: 0x1240n, end: 0x1a46n, name: 'q0.used', device: true },
      { start: 0x2000n, end: 0x3000n, name: 'q1.desc', device: false },
    ];
    const guestOnly = Buffer.from(a);
    guestOnly.fill(0, 0x1002, 0x1004); // avail idx
    guestOnly[0x2010] = 0; // a descriptor of q1
    expect(comparePages(a, guestOnly, rings)).toMatchObject({
      ringPages: ['0x1000', '0x2000'],
      ringBytes: [
        { page: '0x1000', parts: { 'q0.avail': 2 } },
        { page: '0x2000', parts: { 'q1.desc': 1 } },
      ],
      deviceRingPages: [],
    });
    const used = Buffer.from(guestOnly);
    used.fill(0, 0x1242, 0x1244); // used idx
    used[0x1a46] = 0; // the first byte past the used ring
    expect(comparePages(a, used, rings)).toMatchObject({
      ringBytes: [
        { page: '0x1000', parts: { 'q0.avail': 2, 'q0.used': 2, outside: 1 } },
        { page: '0x2000', parts: { 'q1.desc': 1 } },
      ],
      deviceRingPages: ['0x1000'],
    });
  });
});
