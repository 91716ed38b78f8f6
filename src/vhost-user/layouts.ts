/**
 * buffer-layout structures for vhost-user payloads (control plane only; never the data path).
 * All fields little-endian, as the spec requires ("vhost-user.rst: Message Specification").
 */
import lo from 'buffer-layout';

/** buffer-layout has no 64-bit integer that round-trips exactly: this one uses bigint. */
export class U64 extends lo.Layout<bigint> {
  constructor(property?: string) {
    super(8, property);
  }
  override decode(b: Uint8Array, offset = 0): bigint {
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength).readBigUInt64LE(offset);
  }
  override encode(src: bigint, b: Uint8Array, offset = 0): number {
    Buffer.from(b.buffer, b.byteOffset, b.byteLength).writeBigUInt64LE(BigInt.asUintN(64, src), offset);
    return 8;
  }
}
export const u64 = (property?: string): U64 => new U64(property);

/** A single 64-bit integer (features, vring file index, MTU, status, ...). */
export interface U64Payload {
  u64: bigint;
}
export const u64Payload = lo.struct<U64Payload>([u64('u64')]);

/** Vring state description: used by SET_VRING_NUM/BASE, GET_VRING_BASE, SET_VRING_ENABLE. */
export interface VringState {
  index: number;
  num: number;
}
export const vringState = lo.struct<VringState>([lo.u32('index'), lo.u32('num')]);

/** Vring address description (SET_VRING_ADDR). Addresses are front-end virtual addresses. */
export interface VringAddr {
  index: number;
  flags: number;
  descUserAddr: bigint;
  usedUserAddr: bigint;
  availUserAddr: bigint;
  logGuestAddr: bigint;
}
export const vringAddr = lo.struct<VringAddr>([
  lo.u32('index'),
  lo.u32('flags'),
  u64('descUserAddr'),
  u64('usedUserAddr'),
  u64('availUserAddr'),
  u64('logGuestAddr'),
]);

/** One memory region: guest physical address, size, front-end virtual address, fd offset. */
export interface MemRegion {
  guestAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}
export const memRegion = lo.struct<MemRegion>([u64('guestAddr'), u64('size'), u64('userAddr'), u64('mmapOffset')]);
export const MEM_REGION_SIZE = 32;

/** Head of the multiple-regions description (SET_MEM_TABLE); regions follow. */
export interface MemTableHead {
  nregions: number;
  padding: number;
}
export const memTableHead = lo.struct<MemTableHead>([lo.u32('nregions'), lo.u32('padding')]);
export const MEM_TABLE_HEAD_SIZE = 8;

/** Single memory region description (ADD_MEM_REG, REM_MEM_REG): u64 padding, then a region. */
export interface SingleRegion {
  padding: bigint;
  region: MemRegion;
}
export const singleRegion = lo.struct<SingleRegion>([u64('padding'), memRegion.replicate('region')]);

/** Log description (SET_LOG_BASE): the dirty log's size and offset in the fd that comes with it. */
export interface LogDescription {
  mmapSize: bigint;
  mmapOffset: bigint;
}
export const logDescription = lo.struct<LogDescription>([u64('mmapSize'), u64('mmapOffset')]);

/** Message header: request, flags, payload size. */
export interface HeaderFields {
  request: number;
  flags: number;
  size: number;
}
export const header = lo.struct<HeaderFields>([lo.u32('request'), lo.u32('flags'), lo.u32('size')]);
