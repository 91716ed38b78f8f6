/**
 * Frames the tests send through the device. Each carries its number, so a test can tell which
 * came back and in what order.
 */

/**
 * A frame of `len` bytes filled with `seq`'s low byte, EtherType 0x88b5 at byte 12 (local
 * experimental: nothing steers it or offloads it) and `seq` at bytes 14-17.
 */
export function numberedFrame(seq: number, len = 100): Buffer {
  const f = Buffer.alloc(len, seq & 0xff);
  f.writeUInt16BE(0x88b5, 12);
  f.writeUInt32BE(seq >>> 0, 14);
  return f;
}
