// The protocol's own failure: garbage, oversized frames, a bad handshake, or a peer that went away.
import { DoppelError } from '../errors.ts';

export class ProtocolError extends DoppelError {
  constructor(code: string, message: string, hint = 'make sure the CLI and the agent are the same doppel version') {
    super(code, message, { category: 'protocol', hint });
  }
}

/** A request the peer answered with an error: `code` is an errno-style name such as ENOENT. */
export class RemoteError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}
