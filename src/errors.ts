/**
 * Coded errors. Every error the program raises on purpose is one of these classes, with a
 * stable `code` and a `recovery` that says what the caller should do about it.
 */

/** What to do about an error: the caller's next step, not a severity. */
export type Recovery =
  /** Peer input was malformed: close this connection (fds closed), keep serving. */
  | 'close-connection'
  /** The request failed but the session is intact: NACK it (REPLY_ACK) and go on. */
  | 'nack'
  /** A host resource failed; retrying later may work (reconnect, re-open). */
  | 'retry'
  /** The user's configuration is wrong: report it and stop before serving. */
  | 'fix-config';

export abstract class VunError extends Error {
  abstract readonly recovery: Recovery;
  readonly code: string;
  readonly details: Record<string, unknown>;
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** Syntax of a vhost-user message: size, flags, fd count, unknown request. */
export class ProtocolError extends VunError {
  readonly recovery = 'close-connection' as const;
}

/** A request that is well formed but cannot be honoured in the session's state. */
export class SessionError extends VunError {
  readonly recovery: 'nack' | 'close-connection';
  constructor(
    code: string,
    message: string,
    details: Record<string, unknown> = {},
    recovery: 'nack' | 'close-connection' = 'nack',
  ) {
    super(code, message, details);
    this.recovery = recovery;
  }
}

/** The fault plan closed the connection on purpose (disconnect, close-at). */
export class InjectedFault extends VunError {
  readonly recovery = 'close-connection' as const;
}

/** Feature negotiation: a bit set that was never offered, or a missing requirement. */
export class FeatureError extends VunError {
  readonly recovery = 'close-connection' as const;
}

/** A system call failed (sockets, mmap, TAP). `errno` names the cause. */
export class HostIoError extends VunError {
  readonly recovery = 'retry' as const;
  readonly errno: string;
  readonly syscall: string;
  constructor(code: string, message: string, errno: string, syscall: string, details: Record<string, unknown> = {}) {
    super(code, message, { ...details, errno, syscall });
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** Configuration file or command line. `issues` lists each problem with its path. */
export class ConfigError extends VunError {
  readonly recovery = 'fix-config' as const;
  readonly issues: string[];
  constructor(code: string, message: string, issues: string[] = []) {
    super(code, issues.length ? `${message}:\n  ${issues.join('\n  ')}` : message, { issues });
    this.issues = issues;
  }
}

/** Codes, in one place, so docs/errors.md can list them and tests can match them. */
export const ErrorCode = {
  // codec (syntax)
  BadVersion: 'VUN_PROTO_BAD_VERSION',
  BadFlags: 'VUN_PROTO_BAD_FLAGS',
  UnknownRequest: 'VUN_PROTO_UNKNOWN_REQUEST',
  UnsupportedRequest: 'VUN_PROTO_UNSUPPORTED_REQUEST',
  BadSize: 'VUN_PROTO_BAD_SIZE',
  BadFdCount: 'VUN_PROTO_BAD_FD_COUNT',
  FdsTruncated: 'VUN_PROTO_FDS_TRUNCATED',
  BadField: 'VUN_PROTO_BAD_FIELD',
  VringIndex: 'VUN_PROTO_VRING_INDEX',
  PeerClosedMidMessage: 'VUN_PROTO_PEER_CLOSED_MID_MESSAGE',
  // session (meaning)
  FeatureNotOffered: 'VUN_FEATURE_NOT_OFFERED',
  /** SET_FEATURES without a feature the operator required (`--ring packed`). */
  FeatureRequired: 'VUN_FEATURE_REQUIRED',
  /** SET_FEATURES that switches the ring layout (RING_PACKED) while a ring runs. */
  FeatureRingLayoutChanged: 'VUN_FEATURE_RING_LAYOUT_CHANGED',
  ProtocolFeatureNotOffered: 'VUN_FEATURE_PROTOCOL_NOT_OFFERED',
  BadRegion: 'VUN_SESSION_BAD_REGION',
  RegionOverlap: 'VUN_SESSION_REGION_OVERLAP',
  NoSuchRegion: 'VUN_SESSION_NO_SUCH_REGION',
  TooManyRegions: 'VUN_SESSION_TOO_MANY_REGIONS',
  MapFailed: 'VUN_SESSION_MAP_FAILED',
  BadVringNum: 'VUN_SESSION_BAD_VRING_NUM',
  BadVringBase: 'VUN_SESSION_BAD_VRING_BASE',
  BadMtu: 'VUN_SESSION_BAD_MTU',
  // host
  HostIo: 'VUN_HOST_IO',
  OutputFile: 'VUN_HOST_OUTPUT_FILE',
  /** The ring journal (--ring-state) cannot be opened, or another running backend has it. */
  RingState: 'VUN_HOST_RING_STATE',
  // config
  ConfigInvalid: 'VUN_CONFIG_INVALID',
  ConfigFile: 'VUN_CONFIG_FILE',
  FaultPlanInvalid: 'VUN_FAULT_PLAN_INVALID',
  /** --http names an address this process cannot listen on. */
  HttpListen: 'VUN_CONFIG_HTTP_LISTEN',
  // fault plan, on purpose
  FaultDisconnect: 'VUN_FAULT_DISCONNECT',
  Usage: 'VUN_USAGE',
  /** A guest kernel that cannot be had or cannot run a virtio-net guest (guest, conditions). */
  GuestKernel: 'VUN_GUEST_KERNEL',
} as const;
