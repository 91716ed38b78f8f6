/** `vhost-user-net status`: the /status document as a terminal table. */
export function formatStatus(st: Record<string, unknown>): string[] {
  if (!st.connected) return [`no front-end connected (sessions so far: ${st.sessions ?? 0})`, ...faultLines(st)];
  const f = st.features as { acked: string; names: string[] };
  const pf = st.protocolFeatures as { acked: string; names: string[] };
  const status = st.status as { value: string; bits: string[] };
  const out = [
    `session ${st.session}, ${st.queuePairs} queue pair(s), device status ${status.value} ${status.bits.join(' ')}`,
    `features ${f.acked}: ${f.names.join(' ')}`,
    `protocol features ${pf.acked}: ${pf.names.join(' ')}`,
    ...(st.memory as { guestAddr: string; size: string; userAddr: string }[]).map(
      (r) => `memory gpa ${r.guestAddr} size ${r.size} qemu va ${r.userAddr}`,
    ),
    ...interruptLines(st),
    'vring queue        size state               avail  used  frames       bytes    kicks  irq sent/supp/coal  drops',
  ];
  for (const v of st.vrings as Record<string, unknown>[]) {
    const c = v.counters as Record<string, number>;
    const state = `${v.started ? 'started' : 'stopped'}${v.enabled ? ' enabled' : ''}${v.broken ? ' BROKEN' : ''}`;
    const drops =
      (c.dropNoBuffers ?? 0) +
      (c.dropTooBig ?? 0) +
      (c.dropHostError ?? 0) +
      (c.dropDisabled ?? 0) +
      (c.dropMalformed ?? 0);
    // Packed rings: position and wrap counter ("6/1").
    const pos = (x: unknown) => (v.layout === 'packed' ? `${Number(x) & 0x7fff}/${(Number(x) >> 15) & 1}` : String(x));
    out.push(
      `${String(v.index).padStart(5)} ${String(v.queue).padEnd(11)} ${String(v.size).padStart(5)} ${state.padEnd(19)} ${pos(v.lastAvailIdx).padStart(5)} ${pos(v.usedIdx).padStart(5)} ${String(c.frames).padStart(7)} ${String(c.bytes).padStart(11)} ${String(c.kicks).padStart(8)} ${String(c.notifySent).padStart(8)}/${`${c.notifySuppressed}/${c.notifyCoalesced ?? 0}`.padEnd(11)} ${drops}`,
    );
  }
  const obs = st.observation as
    | { capture: { file: string; frames: number; lost: number } | null; ringTrace: { dropped: number } | null }
    | undefined;
  if (obs?.capture) out.push(`capture ${obs.capture.file}: ${obs.capture.frames} frames, ${obs.capture.lost} lost`);
  if (obs?.ringTrace) out.push(`ring trace: ${obs.ringTrace.dropped} events dropped`);
  return [...out, ...faultLines(st)];
}

/** Interrupt coalescing as configured (absent when the backend was not given it). */
function interruptLines(st: Record<string, unknown>): string[] {
  const i = st.interrupts as { coalesce: string; usecs: number; frames: number; appliesTo: string } | null | undefined;
  if (!i) return [];
  return [
    i.coalesce === 'off'
      ? `interrupt coalescing off (${i.appliesTo})`
      : `interrupt coalescing ${i.coalesce}: ${i.usecs} us, ${i.frames} frames (${i.appliesTo})`,
  ];
}

/** The fault plan in force and what each rule injected in this session. */
function faultLines(st: Record<string, unknown>): string[] {
  const f = st.faults as
    { plan: { seed: number } | null; rules: { rule: string; do: string; on: string; injected: number }[] } | undefined;
  if (!f?.plan) return [];
  return [
    `fault plan (seed ${f.plan.seed}): rule, action, where, injected`,
    ...f.rules.map((r) => `  ${r.rule.padEnd(20)} ${r.do.padEnd(13)} ${r.on.padEnd(11)} ${r.injected}`),
  ];
}
