/**
 * pcapng capture (`--pcap FILE`): one interface per vring (receiveqN: frames the device put
 * in the guest's buffers; transmitqN: frames the guest sent), each frame with its virtio-net
 * header decoded in the packet's comment. Readable by tshark and Wireshark.
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

export interface PcapOptions {
  /** Frame bytes kept after the virtio-net header (the interfaces' snaplen). */
  snapLen?: number;
  /** Start a new file once this many bytes are written (0: never). */
  maxBytes?: number;
  /** Keep at most this many files when rotating (0: all). */
  keepFiles?: number;
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
      const body = Buffer.alloc(8);
      body.writeUInt16LE(LINKTYPE_ETHERNET, 0);
      body.writeUInt32LE(this.snapLen, 4);
      const toGuest = v % 2 === 0;
      blocks.push(
        block(IDB, body, [
          option(IF_NAME, Buffer.from(`${toGuest ? 'receiveq' : 'transmitq'}${v >> 1}`)),
          option(
            IF_DESCRIPTION,
            Buffer.from(`vring ${v}: ${toGuest ? 'toGuest (device to driver)' : 'fromGuest (driver to device)'}`),
          ),
          option(IF_TSRESOL, Buffer.from([9])),
        ]),
      );
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

  /** Writes the frames; returns how many reached the file before a write failed (throws). */
  private append(frames: CapturedFrame[], written: { n: number }): void {
    const blocks: Buffer[] = [];
    let size = 0;
    const flush = () => {
      if (blocks.length) this.put(Buffer.concat(blocks));
      this.frames += blocks.length;
      written.n += blocks.length;
      blocks.length = 0;
      size = 0;
    };
    for (const f of frames) {
      const data = f.data.length > this.snapLen ? f.data.subarray(0, this.snapLen) : f.data;
      const body = Buffer.alloc(20 + data.length);
      body.writeUInt32LE(f.vring, 0);
      body.writeUInt32LE(Number(f.timeNs >> 32n), 4);
      body.writeUInt32LE(Number(f.timeNs & 0xffffffffn), 8);
      body.writeUInt32LE(data.length, 12);
      body.writeUInt32LE(f.origLen, 16);
      data.copy(body, 20);
      const flags = Buffer.alloc(4);
      flags.writeUInt32LE(f.direction === 'fromGuest' ? 1 : 2, 0);
      const b = block(EPB, body, [
        option(OPT_COMMENT, Buffer.from(describeNetHeader(f.header) + (f.faults ? `; fault: ${f.faults}` : ''))),
        option(EPB_FLAGS, flags),
      ]);
      const max = this.opts.maxBytes ?? 0;
      // A file holds at least one frame, however small maxBytes is.
      if (max > 0 && this.written + size + b.length > max && this.inFile > 0) {
        flush();
        closeSync(this.fd);
        this.open();
      }
      blocks.push(b);
      size += b.length;
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
