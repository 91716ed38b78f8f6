// Types for the parts of buffer-layout (no typings of its own) that the codec uses.
declare module 'buffer-layout' {
  export class Layout<T = unknown> {
    constructor(span: number, property?: string);
    span: number;
    property?: string;
    decode(b: Uint8Array, offset?: number): T;
    encode(src: T, b: Uint8Array, offset?: number): number;
    getSpan(b?: Uint8Array, offset?: number): number;
    replicate(property: string): Layout<T>;
  }
  export class Structure<T = Record<string, unknown>> extends Layout<T> {
    fields: Layout[];
  }
  export function struct<T = Record<string, unknown>>(fields: Layout[], property?: string): Structure<T>;
  export function u8(property?: string): Layout<number>;
  export function u16(property?: string): Layout<number>;
  export function u32(property?: string): Layout<number>;
  export function blob(length: number, property?: string): Layout<Uint8Array>;
  export function seq<T>(elementLayout: Layout<T>, count: number, property?: string): Layout<T[]>;
  const _default: {
    Layout: typeof Layout;
    Structure: typeof Structure;
    struct: typeof struct;
    u8: typeof u8;
    u16: typeof u16;
    u32: typeof u32;
    blob: typeof blob;
    seq: typeof seq;
  };
  export default _default;
}
