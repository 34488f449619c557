/**
 * Runs small synchronous tasks (decoding a message, building an answer) within a time budget per
 * event-loop turn: a task runs at once while the turn's budget (`sliceMs`) lasts and nothing waits;
 * beyond it, tasks wait for the next turns (setImmediate), which run them back to back for at most
 * `sliceMs` each. Many messages at once cannot add up to one long stall, and a node that is not busy
 * answers without an extra turn.
 */
export class WorkQueue {
  readonly #tasks: Array<() => void> = []
  /** ms of work done in the current turn. */
  #used = 0
  #resetScheduled = false
  #drainScheduled = false

  constructor(private readonly sliceMs = 4) {}

  /** Tasks waiting. */
  get size(): number {
    return this.#tasks.length
  }

  /** Runs `task` now if the turn's budget allows, else in a coming turn; its result settles the promise. */
  run<T>(task: () => T): Promise<T> {
    if (this.#tasks.length === 0 && this.#used < this.sliceMs) {
      try {
        return Promise.resolve(this.#timed(task))
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return new Promise<T>((resolve, reject) => {
      this.#tasks.push(() => {
        try {
          resolve(task())
        } catch (err) {
          reject(err)
        }
      })
      this.#scheduleDrain()
    })
  }

  #timed<T>(task: () => T): T {
    const started = performance.now()
    try {
      return task()
    } finally {
      this.#used += performance.now() - started
      if (!this.#resetScheduled) {
        this.#resetScheduled = true
        setImmediate(() => {
          this.#resetScheduled = false
          this.#used = 0
        })
      }
    }
  }

  #scheduleDrain(): void {
    if (this.#drainScheduled) return
    this.#drainScheduled = true
    setImmediate(() => this.#drain())
  }

  #drain(): void {
    this.#drainScheduled = false
    this.#used = 0
    const started = performance.now()
    while (this.#tasks.length > 0 && performance.now() - started < this.sliceMs) this.#tasks.shift()!()
    this.#used = performance.now() - started
    if (this.#tasks.length > 0) this.#scheduleDrain()
  }
}
