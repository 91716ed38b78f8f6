/**
 * pcapng capture (`--pcap FILE`): one interface per vring (receiveqN: frames the device put
 * in the guest's buffers; transmitqN: frames the guest sent), each frame with its virtio-net
 * header decoded in the packet's comment. Readable by tshark and Wireshark.
 *
 * Each frame is written twice: as plain Ethernet on the vring's interface, for any tool, and
 * with its virtio-net header in front (the bytes the guest wrote or read) on the vring's
 * `-vnet` interface, whose link type is from the user range (LINKTYPE_USER0 for the 12-byte
 * header, LINKTYPE_USER1 for the 10-byte legacy one). The vhost-user messages go to a
 * `vhost-user` interface (LINKTYPE_USER2): each packet is an 8-byte capture header (u8 version
 * 1, u8 direction 0 front-end->backend / 1 backend->front-end, u16 fds carried, u32 session),
 * then the message as it was on the socket. contrib/wireshark/vhost-user-net.lua dissects both.
 * These interfaces are declared when their first packet comes (pcapng allows an interface
 * block anywhere before its first use), so a file says which header length a session used.
 *
 * Format: the PCAP Next Generation Dump File Format (draft-ietf-opsawg-pcapng): a Section
 * Header Block, one Interface Description Block per vring, then Enhanced Packet Blocks.
 * Timestamps are nanoseconds (if_tsresol = 9). Direction (epb_flags): fromGuest is inbound to
 * the device, toGuest outbound.
 *
 * Rotation: with `maxBytes`, a file that reaches the size is closed and the next one begins
 * (FILE, then FILE with .1, .2 ... before the extension), each a complete pcapng with its own
 * header and interfaces; with `keepFiles`, the oldest are removed.
 */
import { closeSync, unlinkSync, writeSync } from 'node:fs';
import { extname } from 'node:path';
import { ErrorCode, HostIoError } from '../errors.js';
import { openOutputFile } from '../util/output.js';

/** A frame on a vring as the guest wrote or read it: header and the first snapLen bytes. */
export interface CapturedFrame {
  vring: number;
  /** Nanoseconds since the epoch. */
  timeNs: bigint;
  direction: 'toGuest' | 'fromGuest';
  /** Frame length without the virtio-net header (the captured part may be shorter). */
  origLen: number;
  header: Buffer;
  data: Buffer;
  /** The fault plan rules behind this frame's lies (indexes in the plan), as the C++ path reports them. */
  faultRules?: number[];
  /** Those rules, named (`name (action)`, ...), for the comment. */
  faults?: string;
}

const SHB = 0x0a0d0d0a;
const IDB = 1;
const EPB = 6;
const LINKTYPE_ETHERNET = 1;
/** The user link types (147-162) this capture uses; contrib/wireshark/vhost-user-net.lua reads them. */
export const LINKTYPE_VNET12 = 147; // LINKTYPE_USER0: 12-byte virtio-net header, then the frame
export const LINKTYPE_VNET10 = 148; // LINKTYPE_USER1: 10-byte (legacy, no MRG_RXBUF) header, then the frame
export const LINKTYPE_VHOST_USER = 149; // LINKTYPE_USER2: capture header, then a vhost-user message
/** Bytes before the message in a LINKTYPE_VHOST_USER packet. */
export const VHOST_USER_CAPTURE_HEADER = 8;
const OPT_COMMENT = 1;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_TSRESOL = 9;
const EPB_FLAGS = 2;

function option(code: number, value: Buffer): Buffer {
  const pad = (4 - (value.length % 4)) % 4;
  const b = Buffer.alloc(4 + value.length + pad);
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(value.length, 2);
  value.copy(b, 4);
  return b;
}
const END_OF_OPTIONS = Buffer.alloc(4);

/** A block: [type][total length][body][options][total length], body padded to 4. */
function block(type: number, body: Buffer, options: Buffer[]): Buffer {
  const pad = (4 - (body.length % 4)) % 4;
  const opts = options.length ? Buffer.concat([...options, END_OF_OPTIONS]) : Buffer.alloc(0);
  const total = 12 + body.length + pad + opts.length;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  body.copy(b, 8);
  opts.copy(b, 8 + body.length + pad);
  b.writeUInt32LE(total, total - 4);
  return b;
}

const queueName = (v: number) => `${v % 2 === 0 ? 'receiveq' : 'transmitq'}${v >> 1}`;
const vringRole = (v: number) => (v % 2 === 0 ? 'toGuest (device to driver)' : 'fromGuest (driver to device)');

/** An Interface Description Block: link type, snap length, name, description, ns timestamps. */
function interfaceBlock(linkType: number, snapLen: number, name: string, description: string): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt16LE(linkType, 0);
  body.writeUInt32LE(snapLen, 4);
  return block(IDB, body, [
    option(IF_NAME, Buffer.from(name)),
    option(IF_DESCRIPTION, Buffer.from(description)),
    option(IF_TSRESOL, Buffer.from([9])),
  ]);
}

/** An Enhanced Packet Block with its comment and direction (1 inbound, 2 outbound). */
function packetBlock(
  iface: number,
  timeNs: bigint,
  data: Buffer,
  origLen: number,
  comment: string,
  dir: number,
): Buffer {
  const body = Buffer.alloc(20 + data.length);
  body.writeUInt32LE(iface, 0);
  body.writeUInt32LE(Number(timeNs >> 32n), 4);
  body.writeUInt32LE(Number(timeNs & 0xffffffffn), 8);
  body.writeUInt32LE(data.length, 12);
  body.writeUInt32LE(origLen, 16);
  data.copy(body, 20);
  const flags = Buffer.alloc(4);
  flags.writeUInt32LE(dir, 0);
  return block(EPB, body, [option(OPT_COMMENT, Buffer.from(comment)), option(EPB_FLAGS, flags)]);
}

const GSO_TYPES: Record<number, string> = { 0: 'NONE', 1: 'TCPV4', 3: 'UDP', 4: 'TCPV6', 5: 'UDP_L4' };

/** The virtio-net header (virtio 1.2 §5.1.6), field by field, as one line. */
export function describeNetHeader(h: Buffer): string {
  if (h.length < 10) return `virtio-net hdr: ${h.length} bytes (short)`;
  const flags = h[0] ?? 0;
  const names = [
    [1, 'NEEDS_CSUM'],
    [2, 'DATA_VALID'],
    [4, 'RSC_INFO'],
  ] as const;
  const f = names.filter(([b]) => flags & b).map(([, n]) => n);
  const gso = h[1] ?? 0;
  const gsoName = `${GSO_TYPES[gso & 0x7f] ?? `0x${(gso & 0x7f).toString(16)}`}${gso & 0x80 ? '|ECN' : ''}`;
  const parts = [
    `flags=${f.length ? f.join('|') : '0'}`,
    `gso_type=${gsoName}`,
    `hdr_len=${h.readUInt16LE(2)}`,
    `gso_size=${h.readUInt16LE(4)}`,
    `csum_start=${h.readUInt16LE(6)}`,
    `csum_offset=${h.readUInt16LE(8)}`,
  ];
  if (h.length >= 12) parts.push(`num_buffers=${h.readUInt16LE(10)}`);
  return `virtio-net hdr: ${parts.join(' ')}`;
}

/** A vhost-user message as it crossed the socket (header and payload), for the capture. */
export interface CapturedMessage {
  session: number;
  timeNs: bigint;
  direction: 'front-end->backend' | 'backend->front-end';
  /** The whole message: 12-byte header, then the payload. */
  bytes: Buffer;
  fds: number;
  /** A line for the packet's comment (the request's name, for readers without the dissector). */
  note: string;
}

export interface PcapOptions {
  /** Frame bytes kept after the virtio-net header (the interfaces' snaplen). */
  snapLen?: number;
  /** Start a new file once this many bytes are written (0: never). */
  maxBytes?: number;
  /** Keep at most this many files when rotating (0: all). */
  keepFiles?: number;
  /** Which packets a frame makes: Ethernet, header and frame (`-vnet`), or both (default). */
  frames?: 'both' | 'ethernet' | 'vnet';
  /** Written into the section header (shb_userappl). */
  application?: string;
  /** Told once when a write fails and the capture stops. */
  onError?: (message: string) => void;
}

export class PcapWriter {
  readonly snapLen: number;
  private fd = -1;
  private written = 0;
  private inFile = 0; // frames in the current file
  private index = 0;
  private readonly files: string[] = [];
  /** Interfaces declared after the per-vring Ethernet ones in the current file, by key. */
  private lazy = new Map<string, number>();
  /** Frames written, and frames lost before they reached the writer (the drain fell behind). */
  frames = 0;
  dropped = 0;
  /** Set when a write failed (disk full, file removed): the capture has stopped. */
  failed: string | undefined;

  constructor(
    private readonly path: string,
    private readonly vrings: number,
    private readonly opts: PcapOptions = {},
  ) {
    this.snapLen = opts.snapLen ?? 262144;
    this.open();
  }

  /** The file being written now. */
  get currentFile(): string {
    return this.files[this.files.length - 1] as string;
  }

  /** Names of the files written so far that still exist, oldest first. */
  get allFiles(): string[] {
    return [...this.files];
  }

  private fileName(i: number): string {
    if (i === 0) return this.path;
    const ext = extname(this.path);
    return ext ? `${this.path.slice(0, -ext.length)}.${i}${ext}` : `${this.path}.${i}`;
  }

  private open(): void {
    const name = this.fileName(this.index++);
    this.fd = openOutputFile(name, 'w');
    this.files.push(name);
    this.written = 0;
    this.inFile = 0;
    this.lazy = new Map();
    const keep = this.opts.keepFiles ?? 0;
    while (keep > 0 && this.files.length > keep) {
      const old = this.files.shift() as string;
      try {
        unlinkSync(old);
      } catch {
        // already gone: nothing to keep tidy
      }
    }
    const shb = Buffer.alloc(16);
    shb.writeUInt32LE(0x1a2b3c4d, 0); // byte-order magic
    shb.writeUInt16LE(1, 4);
    shb.writeUInt16LE(0, 6);
    shb.writeBigInt64LE(-1n, 8); // section length not given
    const blocks = [block(SHB, shb, [option(SHB_USERAPPL, Buffer.from(this.opts.application ?? 'vhost-user-net'))])];
    for (let v = 0; v < this.vrings; v++) {
      blocks.push(interfaceBlock(LINKTYPE_ETHERNET, this.snapLen, queueName(v), `vring ${v}: ${vringRole(v)}`));
    }
    try {
      this.put(Buffer.concat(blocks));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new HostIoError(ErrorCode.OutputFile, `cannot write ${name}`, e.code ?? 'EIO', 'write', { path: name });
    }
  }

  private put(b: Buffer): void {
    let off = 0;
    while (off < b.length) off += writeSync(this.fd, b, off);
    this.written += b.length;
  }

  /**
   * Appends frames (one write for the batch); rotates first when the file is full. A failed
   * write stops the capture (`failed`); what could not be written counts as dropped.
   */
  write(frames: CapturedFrame[]): void {
    if (frames.length === 0) return;
    if (this.fd < 0) {
      this.dropped += frames.length;
      return;
    }
    const written = { n: 0 };
    try {
      this.append(frames, written);
    } catch (err) {
      this.failed = (err as Error).message;
      this.dropped += frames.length - written.n;
      this.opts.onError?.(this.failed);
      try {
        closeSync(this.fd);
      } catch {
        // already unusable
      }
      this.fd = -1;
    }
  }

  /**
   * The interface for `key`, declared into `blocks` the first time the current file needs it
   * (the Ethernet ones are declared with the file).
   */
  private lazyInterface(key: string, blocks: Buffer[], declare: () => Buffer): { id: number; size: number } {
    const known = this.lazy.get(key);
    if (known !== undefined) return { id: known, size: 0 };
    const id = this.vrings + this.lazy.size;
    this.lazy.set(key, id);
    const b = declare();
    blocks.push(b);
    return { id, size: b.length };
  }

  /** Writes the frames; returns how many reached the file before a write failed (throws). */
  private append(frames: CapturedFrame[], written: { n: number }): void {
    this.appendPackets(
      frames.map((f) => (blocks: Buffer[]) => {
        const data = f.data.length > this.snapLen ? f.data.subarray(0, this.snapLen) : f.data;
        const dir = f.direction === 'fromGuest' ? 1 : 2;
        const comment = describeNetHeader(f.header) + (f.faults ? `; fault: ${f.faults}` : '');
        const which = this.opts.frames ?? 'both';
        const link = f.header.length === 12 ? LINKTYPE_VNET12 : f.header.length === 10 ? LINKTYPE_VNET10 : 0;
        // No link type for this header length: the Ethernet packet, whatever was asked.
        if (which !== 'vnet' || link === 0) blocks.push(packetBlock(f.vring, f.timeNs, data, f.origLen, comment, dir));
        if (which === 'ethernet' || link === 0) return;
        const { id } = this.lazyInterface(`vnet:${f.vring}:${link}`, blocks, () =>
          interfaceBlock(
            link,
            this.snapLen + f.header.length,
            `${queueName(f.vring)}-vnet`,
            `vring ${f.vring}: ${vringRole(f.vring)}, ${f.header.length}-byte virtio-net header then the frame`,
          ),
        );
        blocks.push(
          packetBlock(id, f.timeNs, Buffer.concat([f.header, data]), f.header.length + f.origLen, comment, dir),
        );
      }),
      written,
    );
  }

  /**
   * Appends vhost-user messages to the `vhost-user` interface (control plane: a handful per
   * session). A failed write stops the capture, as for frames.
   */
  writeMessages(messages: CapturedMessage[]): void {
    if (messages.length === 0 || this.fd < 0) return;
    try {
      this.appendPackets(
        messages.map((m) => (blocks: Buffer[]) => {
          const { id } = this.lazyInterface('vhost-user', blocks, () =>
            interfaceBlock(
              LINKTYPE_VHOST_USER,
              0,
              'vhost-user',
              'vhost-user messages: capture header, then the message',
            ),
          );
          const head = Buffer.alloc(VHOST_USER_CAPTURE_HEADER);
          head[0] = 1;
          head[1] = m.direction === 'front-end->backend' ? 0 : 1;
          head.writeUInt16LE(m.fds, 2);
          head.writeUInt32LE(m.session >>> 0, 4);
          const data = Buffer.concat([head, m.bytes]);
          const comment = `vhost-user ${m.note}${m.fds ? ` +${m.fds} fd` : ''}`;
          blocks.push(
            packetBlock(id, m.timeNs, data, data.length, comment, m.direction === 'front-end->backend' ? 1 : 2),
          );
        }),
        { n: 0 },
        false,
      );
    } catch (err) {
      this.failed = (err as Error).message;
      this.opts.onError?.(this.failed);
      try {
        closeSync(this.fd);
      } catch {
        // already unusable
      }
      this.fd = -1;
    }
  }

  /**
   * Writes packets, each made by a function that pushes its blocks (and any interface it
   * needs first); rotates between packets when the file is full. `frames`: count them as frames.
   */
  private appendPackets(makers: ((blocks: Buffer[]) => void)[], written: { n: number }, frames = true): void {
    let blocks: Buffer[] = [];
    let pending = 0; // packets in `blocks`
    let size = 0; // their bytes
    const flush = () => {
      if (blocks.length) this.put(Buffer.concat(blocks));
      if (frames) this.frames += pending;
      written.n += pending;
      blocks = [];
      pending = 0;
      size = 0;
    };
    for (const make of makers) {
      let mine: Buffer[] = [];
      make(mine);
      const max = this.opts.maxBytes ?? 0;
      const bytes = mine.reduce((n, b) => n + b.length, 0);
      // A file holds at least one packet, however small maxBytes is.
      if (max > 0 && this.written + size + bytes > max && this.inFile > 0) {
        flush();
        closeSync(this.fd);
        this.open();
        mine = [];
        make(mine); // again: the new file declares its interfaces afresh
      }
      blocks.push(...mine);
      size += mine.reduce((n, b) => n + b.length, 0);
      pending++;
      this.inFile++;
    }
    flush();
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}
