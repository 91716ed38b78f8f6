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

/** An Ethernet + IPv4 + UDP frame of `len` bytes to port `port`, source MAC ending in `tag`. */
export function udpFrame(len: number, port: number, tag = 1): Buffer {
  const f = Buffer.alloc(len);
  Buffer.from([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, tag, 0x08, 0x00]).copy(f, 0);
  f[14] = 0x45;
  f.writeUInt16BE(len - 14, 16);
  f[22] = 64;
  f[23] = 17;
  Buffer.from([10, 0, 0, 1, 10, 0, 0, 2]).copy(f, 26);
  f.writeUInt16BE(40000, 34);
  f.writeUInt16BE(port, 36);
  f.writeUInt16BE(len - 34, 38);
  return f;
}
