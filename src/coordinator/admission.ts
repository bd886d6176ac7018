// Who may join a run: the shared token and the protocol version. The token is
// compared through SHA-256 digests with timingSafeEqual, so the comparison
// takes the same time whatever the guess (and whatever its length).

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { PROTOCOL_VERSION, TOKEN_ENV, type HelloMessage } from '../common/protocol/index.js';

export { TOKEN_ENV };

export class Admission {
  private readonly digest: Buffer;

  constructor(token: string) {
    this.digest = sha256(token);
  }

  /** Why this hello is refused, or null if the worker may join. Never echoes the token. */
  problem(hello: HelloMessage): string | null {
    if (hello.protocol !== PROTOCOL_VERSION) {
      return `protocol version ${hello.protocol} is not supported: this coordinator speaks version ${PROTOCOL_VERSION}; ` +
        'run the same tfjs-ddp version on every machine';
    }
    if (!timingSafeEqual(sha256(hello.token), this.digest)) {
      return `wrong token: start the worker with the coordinator's --token (or ${TOKEN_ENV})`;
    }
    return null;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/**
 * The run's token: --token, else $TFJS_DDP_TOKEN, else (only when every
 * worker is a local thread, which receives it directly) a random one.
 */
export function resolveToken(flag: string | undefined, remoteWorkers: number): string {
  const token = flag ?? process.env[TOKEN_ENV];
  if (token !== undefined && token !== '') return token;
  if (remoteWorkers > 0) {
    throw new Error(
      `${remoteWorkers} remote worker(s) expected but no token is set: pass --token <secret> (or set ${TOKEN_ENV}) ` +
        'to the coordinator and to every worker',
    );
  }
  return randomBytes(24).toString('base64url');
}
