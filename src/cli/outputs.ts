/**
 * The files a backend writes while it serves, opened from a Config: the capture (pcapng), the
 * ring trace and the message trace. Start-up opens them; a reload opens new ones.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { ErrorCode } from '../errors.js';
import { MessageTrace } from '../trace/message-trace.js';
import { PcapWriter } from '../trace/pcapng.js';
import { RingTrace } from '../trace/ring-trace.js';

export class Outputs {
  constructor(
    private readonly log: Logger,
    /** Written into the capture's section header. */
    private readonly application: string,
  ) {}

  capture(c: Config): PcapWriter | undefined {
    if (!c.pcap) return undefined;
    return new PcapWriter(c.pcap.file, c.queues * 2, {
      snapLen: c.pcap.snapLen,
      maxBytes: (c.pcap.maxMb ?? 0) * 1024 * 1024,
      keepFiles: c.pcap.keepFiles,
      frames: c.pcap.frames,
      application: this.application,
      onError: (error) =>
        this.log.error({ code: ErrorCode.OutputFile, error }, 'capture stopped: a write failed (frames keep flowing)'),
    });
  }

  ringTrace(c: Config): RingTrace | undefined {
    return c.trace.rings ? new RingTrace(c.trace.rings) : undefined;
  }

  messageTrace(c: Config): MessageTrace | undefined {
    return c.trace.messages ? new MessageTrace(c.trace.messages) : undefined;
  }
}
