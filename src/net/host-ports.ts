/**
 * The host side of one queue pair for the TS data plane, one small class per kind of host
 * backend, as native/host_port.h is for the C++ workers: where a frame the guest sent goes
 * (fromGuest) and where a frame for the guest comes from (toGuest). The data plane never asks
 * which kind it has.
 */
import type { HostBackendSpec } from '../host/host-backend.js';
import type { NativeBinding } from '../native.js';

/** Room for a 64 KiB GSO frame, its header and the AF_PACKET offset. */
const MAX_FRAME = 65536 + 12 + 16;

export interface HostPort {
  /**
   * Sends a frame ([virtio-net header][frame]). 'looped': the frame is for the guest's own
   * receiveqs (loopback). A host error throws (a HostIoError from the native call).
   */
  send(frame: Buffer): 'sent' | 'looped';
  /** One waiting frame as [header (hdrLen)][frame], or undefined when none waits. */
  receive(hdrLen: number): Buffer | undefined;
  /** Whether receive can ever return a frame. */
  readonly produces: boolean;
  /** The fd that becomes readable when a frame waits (undefined: ask on every pass). */
  readonly fd: number | undefined;
  /** The header size and the TUN_F_* offloads the guest accepts, after SET_FEATURES. */
  configure(hdrLen: number, offloads: number): void;
}

class NullPort implements HostPort {
  readonly fd = undefined;
  constructor(private readonly sourceLen: number) {}
  get produces(): boolean {
    return this.sourceLen > 0;
  }
  send(): 'sent' {
    return 'sent';
  }
  /** null:source=LEN: a broadcast frame of LEN bytes, ethertype 0x88b5 (local experimental). */
  receive(hdrLen: number): Buffer | undefined {
    if (!this.sourceLen) return undefined;
    const f = Buffer.alloc(hdrLen + this.sourceLen);
    f.fill(0xff, hdrLen, hdrLen + 6);
    Buffer.from([0x02, 0, 0, 0, 0, 1, 0x88, 0xb5]).copy(f, hdrLen + 6);
    return f;
  }
  configure(): void {}
}

class LoopbackPort implements HostPort {
  readonly fd = undefined;
  readonly produces = false;
  send(): 'looped' {
    return 'looped';
  }
  receive(): undefined {
    return undefined;
  }
  configure(): void {}
}

/** TAP with IFF_VNET_HDR: the header passes straight through (its vnet header size is ours). */
class TapPort implements HostPort {
  readonly produces = true;
  private readonly buf = Buffer.alloc(MAX_FRAME);
  constructor(
    private readonly native: NativeBinding,
    readonly fd: number,
  ) {}
  send(frame: Buffer): 'sent' {
    this.native.fdWrite(this.fd, frame);
    return 'sent';
  }
  receive(hdrLen: number): Buffer | undefined {
    const n = this.native.fdRead(this.fd, this.buf);
    return n >= hdrLen ? Buffer.from(this.buf.subarray(0, n)) : undefined;
  }
  configure(hdrLen: number, offloads: number): void {
    this.native.tapSetVnet(this.fd, hdrLen, offloads);
  }
}

/** AF_PACKET with PACKET_VNET_HDR: the kernel speaks the 10-byte header, without num_buffers. */
class AfPacketPort implements HostPort {
  readonly produces = true;
  private readonly buf = Buffer.alloc(MAX_FRAME);
  constructor(
    private readonly native: NativeBinding,
    readonly fd: number,
  ) {}
  send(frame: Buffer): 'sent' {
    this.native.fdWrite(this.fd, Buffer.concat([frame.subarray(0, 10), frame.subarray(12)]));
    return 'sent';
  }
  receive(): Buffer | undefined {
    // Read the header 2 bytes in, then move it down so num_buffers (bytes 10-11) is ours.
    const n = this.native.fdRead(this.fd, this.buf.subarray(2));
    if (n < 10) return undefined;
    this.buf.copy(this.buf, 0, 2, 12);
    return Buffer.from(this.buf.subarray(0, n + 2));
  }
  configure(): void {}
}

/** The port of queue pair `pair`: its TAP queue or AF_PACKET socket is `fds[pair]`. */
export function makeHostPort(native: NativeBinding, spec: HostBackendSpec, fd: number | undefined): HostPort {
  switch (spec.kind) {
    case 'tap':
    case 'macvtap':
      if (fd !== undefined) return new TapPort(native, fd);
      break;
    case 'af-packet':
      if (fd !== undefined) return new AfPacketPort(native, fd);
      break;
    case 'loopback':
      return new LoopbackPort();
    case 'null':
      return new NullPort(spec.sourceLen ?? 0);
  }
  return new NullPort(0);
}
