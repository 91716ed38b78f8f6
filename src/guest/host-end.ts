/**
 * The host end of a guest (tests, `guest`, `conditions`), in a network namespace made here: the backend started
 * as a real process inside it, serving a TAP (created by the backend) or an AF_PACKET socket on
 * one end of a veth pair whose other end has the host's address. Cleanups are pushed on
 * `cleanups` (run in reverse order by the test's afterEach).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns, requireRoot, startBackend, waitForLink } from './guest.js';
import type { Proc } from '../util/proc.js';

export const HOST_IP = '10.77.0.1';
export const GUEST_IP = '10.77.0.2';
export type Cleanups = (() => void | Promise<void>)[];

export interface HostEnd {
  ns: Netns;
  sock: string;
  backend: Proc;
  /** The host's interface (with HOST_IP). */
  dev: string;
}

export async function hostEnd(
  cleanups: Cleanups,
  o: {
    kind?: 'tap' | 'af-packet';
    mtu?: number;
    args?: string[];
    iperf?: boolean;
    quiet?: boolean;
    /** af-packet: the fanout mode over the pairs' sockets (`af-packet:vunA,fanout=MODE`). */
    fanout?: string;
  } = {},
): Promise<HostEnd> {
  requireRoot();
  const kind = o.kind ?? 'tap';
  const mtu = o.mtu ?? 1500;
  const ns = new Netns();
  cleanups.push(() => ns.delete());
  // quiet: no IPv6 at all, so the host end sends the guest nothing of its own (its link-up
  // chatter would otherwise wait in the TAP's queue and reach the guest first).
  if (o.quiet) ns.sh('sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1');
  const dir = mkdtempSync(join(tmpdir(), 'vun-host-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vhost.sock');
  if (kind === 'af-packet') {
    // AF_PACKET binds to vunA; its veth peer vunB is the host's end with the address.
    ns.sh(
      `ip link add vunA mtu ${mtu} type veth peer name vunB mtu ${mtu} && ip link set vunA up && ip link set vunB up`,
    );
  }
  const spec = kind === 'tap' ? 'tap:vun0' : `af-packet:vunA${o.fanout ? `,fanout=${o.fanout}` : ''}`;
  const backend = startBackend(ns, sock, ['--backend', spec, ...(o.args ?? [])]);
  cleanups.push(() => backend.stop().then(() => undefined));
  const dev = kind === 'tap' ? 'vun0' : 'vunB';
  if (kind === 'tap') await waitForLink(ns, 'vun0');
  const end = Date.now() + 15_000;
  while (!existsSync(sock)) {
    if (!backend.running || Date.now() > end) throw new Error(`backend did not listen on ${sock}:\n${backend.tail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  ns.sh(`ip addr add ${HOST_IP}/24 dev ${dev} && ip link set ${dev} mtu ${mtu}`);
  if (o.iperf) {
    const iperf = ns.spawn('iperf3', ['-s', '-B', HOST_IP]);
    cleanups.push(() => iperf.stop().then(() => undefined));
  }
  return { ns, sock, backend, dev };
}
