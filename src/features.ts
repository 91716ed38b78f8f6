/**
 * Feature bits. Bits are bigint bit *numbers*; masks are bigint. Test a mask only through
 * `hasFeature`, build one only through `featureMask`: never use a bit number as a mask.
 */

/** Virtio feature bit numbers: device-independent (virtio 1.2 §6) and net (§5.1.3). */
export const VirtioFeature = {
  NET_F_CSUM: 0n,
  NET_F_GUEST_CSUM: 1n,
  NET_F_CTRL_GUEST_OFFLOADS: 2n,
  NET_F_MTU: 3n,
  NET_F_MAC: 5n,
  NET_F_GUEST_TSO4: 7n,
  NET_F_GUEST_TSO6: 8n,
  NET_F_GUEST_ECN: 9n,
  NET_F_GUEST_UFO: 10n,
  NET_F_HOST_TSO4: 11n,
  NET_F_HOST_TSO6: 12n,
  NET_F_HOST_ECN: 13n,
  NET_F_HOST_UFO: 14n,
  NET_F_MRG_RXBUF: 15n,
  NET_F_STATUS: 16n,
  NET_F_CTRL_VQ: 17n,
  NET_F_CTRL_RX: 18n,
  NET_F_CTRL_VLAN: 19n,
  NET_F_GUEST_ANNOUNCE: 21n,
  NET_F_MQ: 22n,
  NET_F_CTRL_MAC_ADDR: 23n,
  F_NOTIFY_ON_EMPTY: 24n,
  /** vhost: log every guest page the device writes (vhost-user.rst "Migration"). */
  VHOST_F_LOG_ALL: 26n,
  F_ANY_LAYOUT: 27n,
  RING_F_INDIRECT_DESC: 28n,
  RING_F_EVENT_IDX: 29n,
  /** vhost-user: GET/SET_PROTOCOL_FEATURES exist (vhost-user.rst "Protocol features"). */
  VHOST_USER_F_PROTOCOL_FEATURES: 30n,
  F_VERSION_1: 32n,
  F_ACCESS_PLATFORM: 33n,
  F_RING_PACKED: 34n,
  F_IN_ORDER: 35n,
  F_ORDER_PLATFORM: 36n,
  F_SR_IOV: 37n,
  F_NOTIFICATION_DATA: 38n,
  NET_F_GUEST_USO4: 54n,
  NET_F_GUEST_USO6: 55n,
  NET_F_HOST_USO: 56n,
  NET_F_HASH_REPORT: 57n,
  NET_F_GUEST_HDRLEN: 59n,
  NET_F_RSS: 60n,
  NET_F_RSC_EXT: 61n,
  NET_F_STANDBY: 62n,
} as const;

/** vhost-user protocol feature bit numbers (vhost-user.rst "Protocol features"). */
export const ProtocolFeature = {
  MQ: 0n,
  LOG_SHMFD: 1n,
  RARP: 2n,
  REPLY_ACK: 3n,
  NET_MTU: 4n,
  BACKEND_REQ: 5n,
  CROSS_ENDIAN: 6n,
  CRYPTO_SESSION: 7n,
  PAGEFAULT: 8n,
  CONFIG: 9n,
  BACKEND_SEND_FD: 10n,
  HOST_NOTIFIER: 11n,
  INFLIGHT_SHMFD: 12n,
  RESET_DEVICE: 13n,
  INBAND_NOTIFICATIONS: 14n,
  CONFIGURE_MEM_SLOTS: 15n,
  STATUS: 16n,
  XEN_MMAP: 17n,
  SHARED_OBJECT: 18n,
  DEVICE_STATE: 19n,
} as const;

/** True when bit number `bit` is set in `mask`. The only way features are tested. */
export function hasFeature(mask: bigint, bit: bigint): boolean {
  return ((mask >> bit) & 1n) === 1n;
}

/** The mask with exactly these bit numbers set. */
export function featureMask(...bits: bigint[]): bigint {
  let m = 0n;
  for (const b of bits) m |= 1n << b;
  return m;
}

/** Names of the bits set in `mask` (unknown ones as `bit<N>`), lowest first. */
export function featureNames(mask: bigint, table: Record<string, bigint>): string[] {
  const byBit = new Map<bigint, string>();
  for (const [name, bit] of Object.entries(table)) byBit.set(bit, name);
  const out: string[] = [];
  for (let bit = 0n; mask >> bit !== 0n; bit++) {
    if (hasFeature(mask, bit)) out.push(byBit.get(bit) ?? `bit${bit}`);
  }
  return out;
}

/** `0x` hex, the house format for masks and addresses in logs. */
export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}
