import { type Logger, type ThrottledLog, throttleLog } from 'meshkit/plugin'
import type { GossipMessage, GossipValidator, GossipVerdict } from './types.js'

const VERDICTS: ReadonlySet<string> = new Set(['accept', 'reject', 'ignore'])

/**
 * Runs a topic's validators in the order they were added: the first verdict that is not `accept` wins.
 * Each is bounded by `timeoutMs`; one that throws, times out or answers anything else ignores the
 * message (logged, at most 5 lines a minute: a peer decides how often it happens).
 */
export class ValidatorRunner {
  readonly #log: ThrottledLog

  constructor(
    private readonly validators: ReadonlyMap<string, ReadonlySet<GossipValidator>>,
    private readonly timeoutMs: number,
    logger: Logger,
  ) {
    this.#log = throttleLog((m) => logger.warn(m), {
      max: 5,
      windowMs: 60_000,
      what: 'slow or failing gossip validators',
    })
  }

  async run(topic: string, message: GossipMessage): Promise<GossipVerdict> {
    for (const validator of this.validators.get(topic) ?? []) {
      const verdict = await this.#one(topic, validator, message)
      if (verdict !== 'accept') return verdict
    }
    return 'accept'
  }

  /** Writes out what the throttled log held back. */
  flush(): void {
    this.#log.flush()
  }

  async #one(topic: string, validator: GossipValidator, message: GossipMessage): Promise<GossipVerdict> {
    let timer: NodeJS.Timeout | undefined
    try {
      const answer = validator(message)
      const verdict =
        answer instanceof Promise
          ? await Promise.race([
              answer,
              new Promise<'timeout'>((resolve) => {
                timer = setTimeout(() => resolve('timeout'), this.timeoutMs)
              }),
            ])
          : answer
      if (verdict === 'timeout') {
        this.#log(
          `a validator of gossip topic '${topic}' took more than ${this.timeoutMs} ms: message ignored`,
        )
        return 'ignore'
      }
      if (VERDICTS.has(verdict as string)) return verdict as GossipVerdict
      this.#log(
        `a validator of gossip topic '${topic}' answered ${String(verdict).slice(0, 40)}, not accept|reject|ignore: message ignored`,
      )
      return 'ignore'
    } catch (err) {
      this.#log(`a validator of gossip topic '${topic}' threw (${err}): message ignored`)
      return 'ignore'
    } finally {
      clearTimeout(timer)
    }
  }
}
