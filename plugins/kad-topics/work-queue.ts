/**
 * Runs small synchronous tasks (decoding a message, building an answer) in time slices: queued tasks run
 * back to back for at most `sliceMs`, then the queue yields to the event loop (setImmediate) before the
 * next slice. Many messages at once cannot add up to one long stall, and a busy process still gets through
 * many of them per event-loop turn.
 */
export class WorkQueue {
  readonly #tasks: Array<() => void> = []
  #scheduled = false

  constructor(private readonly sliceMs = 4) {}

  /** Tasks waiting. */
  get size(): number {
    return this.#tasks.length
  }

  /** Runs `task` in a coming slice; its result (or throw) settles the promise. */
  run<T>(task: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#tasks.push(() => {
        try {
          resolve(task())
        } catch (err) {
          reject(err)
        }
      })
      this.#schedule()
    })
  }

  #schedule(): void {
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(() => this.#drain())
  }

  #drain(): void {
    this.#scheduled = false
    const started = performance.now()
    while (this.#tasks.length > 0 && performance.now() - started < this.sliceMs) this.#tasks.shift()!()
    if (this.#tasks.length > 0) this.#schedule()
  }
}
