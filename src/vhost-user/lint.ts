/**
 * Lint: front-end behaviour the spec rules out but that is safe to go on with. Each rule has an
 * id and the spec section behind it; a violation is counted, logged once per session and rule,
 * and shows in the trace (`vhost-user lint` events) and in /status. Unsafe input is not lint:
 * it is a ProtocolError (the connection closes) or a broken ring.
 */
import { hasFeature, ProtocolFeature } from '../features.js';
import { type Header, Request, requestName } from './codec.js';

export const LINT_RULES = {
  'request-without-protocol-feature': {
    section: 'vhost-user.rst "Protocol features"',
    text: 'a request whose protocol feature was not negotiated',
  },
  'need-reply-without-reply-ack': {
    section: 'vhost-user.rst "REPLY_ACK"',
    text: 'need_reply set while REPLY_ACK was not negotiated (no reply is sent)',
  },
  'enable-before-protocol-features': {
    section: 'vhost-user.rst VHOST_USER_SET_VRING_ENABLE',
    text: 'SET_VRING_ENABLE before the protocol features were negotiated',
  },
} as const;
export type LintRule = keyof typeof LINT_RULES;

export interface LintFinding {
  rule: LintRule;
  section: string;
  text: string;
  request: string;
}

/**
 * The findings for one request, given what was negotiated before it and the protocol feature
 * the request needs (the handler table's `needs` column).
 */
export function lintRequest(
  h: Header,
  s: { ackedProtocolFeatures: bigint; protocolFeaturesSet: boolean },
  need: bigint | undefined,
): LintFinding[] {
  const out: LintFinding[] = [];
  const request = requestName(h.request);
  const add = (rule: LintRule) => out.push({ rule, ...LINT_RULES[rule], request });
  if (need !== undefined && !hasFeature(s.ackedProtocolFeatures, need)) add('request-without-protocol-feature');
  // SET_PROTOCOL_FEATURES itself may carry need_reply before REPLY_ACK is on; GET_* have replies.
  if (
    h.needReply &&
    h.request !== Request.SET_PROTOCOL_FEATURES &&
    !hasFeature(s.ackedProtocolFeatures, ProtocolFeature.REPLY_ACK)
  ) {
    add('need-reply-without-reply-ack');
  }
  if (h.request === Request.SET_VRING_ENABLE && !s.protocolFeaturesSet) add('enable-before-protocol-features');
  return out;
}
