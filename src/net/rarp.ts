/**
 * SEND_RARP: after a migration the front-end asks the back-end to announce the guest's MAC
 * (vhost-user.rst "VHOST_USER_SEND_RARP"), so that switches and bridges learn where the guest is
 * now. The frame is the one QEMU's own announce sends (net/announce.c): a broadcast RARP
 * "request reverse" (ethertype 0x8035) with the guest MAC as sender and target hardware
 * address, sent 5 times with QEMU's default backoff (50 ms, then 100 ms more each round).
 */

/** Gaps before each round, ms: QEMU's announce-initial 50, announce-step 100, 5 rounds. */
export const ANNOUNCE_GAPS_MS = [0, 50, 150, 250, 350] as const;

/** The RARP frame for `mac` ("52:54:00:12:34:56"), padded to the 60-byte Ethernet minimum. */
export function rarpFrame(mac: string): Buffer {
  const m = Buffer.from(mac.split(':').map((x) => Number.parseInt(x, 16)));
  if (m.length !== 6 || m.some((b) => Number.isNaN(b))) throw new Error(`not a MAC: ${mac}`);
  const f = Buffer.alloc(60);
  f.fill(0xff, 0, 6); // broadcast
  m.copy(f, 6);
  f.writeUInt16BE(0x8035, 12); // RARP
  f.writeUInt16BE(1, 14); // hardware type: Ethernet
  f.writeUInt16BE(0x0800, 16); // protocol type: IPv4
  f[18] = 6; // hardware address length
  f[19] = 4; // protocol address length
  f.writeUInt16BE(3, 20); // opcode 3: request reverse
  m.copy(f, 22); // sender hardware address; sender protocol address 0.0.0.0
  m.copy(f, 32); // target hardware address; target protocol address 0.0.0.0
  return f;
}

/** Sends the announce rounds through `send` (the frame without a virtio-net header). */
export class Announcer {
  private timers: NodeJS.Timeout[] = [];

  constructor(private readonly send: (frame: Buffer) => void) {}

  announce(mac: string): void {
    this.cancel();
    const frame = rarpFrame(mac);
    let at = 0;
    for (const gap of ANNOUNCE_GAPS_MS) {
      at += gap;
      if (at === 0) this.send(frame);
      else this.timers.push(setTimeout(() => this.send(frame), at));
    }
  }

  cancel(): void {
    for (const t of this.timers.splice(0)) clearTimeout(t);
  }
}
