/** What an attack observed: counters, bytes each way, errors by kind, and notes worth a human's eye. */

/** The outcome of one attack run. */
export interface AttackReport {
  attack: string
  /** How long it ran (ms). */
  ms: number
  /** Bytes the attacker sent to the target (application bytes it wrote: streams, datagrams, sockets). */
  bytesSent: number
  /** Bytes the attacker received from the target. */
  bytesReceived: number
  /** bytesReceived / bytesSent (0 when nothing was sent): above 1, the target amplifies. */
  amplification: number
  /** Named counters, e.g. `streams_opened`, `streams_reset_by_target`, `clusters_created`. */
  counters: Record<string, number>
  /** Errors the attacker met, by a short kind (error name or code), with counts. */
  errors: Record<string, number>
  /** Observations in words (the first few of each kind). */
  notes: string[]
  /** Set when the attack itself failed to run (a harness problem, not the target's). */
  failed?: string
}

const MAX_NOTES = 40

/** Collects the counters of one attack run; `report()` turns them into an {@link AttackReport}. */
export class Tally {
  readonly #counters = new Map<string, number>()
  readonly #errors = new Map<string, number>()
  readonly #notes: string[] = []
  readonly #noteKinds = new Map<string, number>()
  #sent = 0
  #received = 0
  readonly #started = Date.now()

  constructor(readonly attack: string) {}

  inc(counter: string, n = 1): void {
    this.#counters.set(counter, (this.#counters.get(counter) ?? 0) + n)
  }

  /** Keeps the largest value seen for `counter` (e.g. concurrent streams held open). */
  max(counter: string, value: number): void {
    this.#counters.set(counter, Math.max(this.#counters.get(counter) ?? 0, value))
  }

  set(counter: string, value: number): void {
    this.#counters.set(counter, value)
  }

  get(counter: string): number {
    return this.#counters.get(counter) ?? 0
  }

  sent(bytes: number): void {
    this.#sent += bytes
  }

  received(bytes: number): void {
    this.#received += bytes
  }

  get bytesSent(): number {
    return this.#sent
  }

  get bytesReceived(): number {
    return this.#received
  }

  /** Counts an error by kind (its `code`, else its `name`, else the first words of its message). */
  error(err: unknown): void {
    this.#errors.set(errorKind(err), (this.#errors.get(errorKind(err)) ?? 0) + 1)
  }

  /** A note; at most 3 of each `kind` (the first word by default) and 40 in all are kept. */
  note(text: string, kind = text.split(' ')[0]): void {
    const seen = this.#noteKinds.get(kind) ?? 0
    this.#noteKinds.set(kind, seen + 1)
    if (seen < 3 && this.#notes.length < MAX_NOTES) this.#notes.push(text)
  }

  report(failed?: unknown): AttackReport {
    return {
      attack: this.attack,
      ms: Date.now() - this.#started,
      bytesSent: this.#sent,
      bytesReceived: this.#received,
      amplification: this.#sent === 0 ? 0 : Math.round((this.#received / this.#sent) * 1000) / 1000,
      counters: Object.fromEntries([...this.#counters].sort(([a], [b]) => a.localeCompare(b))),
      errors: Object.fromEntries(this.#errors),
      notes: [...this.#notes],
      ...(failed === undefined ? {} : { failed: failed instanceof Error ? failed.stack : String(failed) }),
    }
  }
}

/** A short kind for an error: its code, else its name (unless a plain Error), else its first words. */
export function errorKind(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; name?: unknown; message?: unknown }
    if (typeof e.code === 'string' && e.code) return e.code
    if (typeof e.name === 'string' && e.name && e.name !== 'Error') return e.name
    if (typeof e.message === 'string')
      return (
        e.message
          .split(/[:(\n]/)[0]
          .slice(0, 60)
          .trim() || 'Error'
      )
  }
  return String(err).slice(0, 60)
}

/** Sums several reports of the same attack (counters and bytes add up; notes and errors merge). */
export function mergeReports(reports: readonly AttackReport[]): AttackReport {
  const first = reports[0]
  const out: AttackReport = {
    attack: first.attack,
    ms: 0,
    bytesSent: 0,
    bytesReceived: 0,
    amplification: 0,
    counters: {},
    errors: {},
    notes: [],
  }
  for (const r of reports) {
    out.ms += r.ms
    out.bytesSent += r.bytesSent
    out.bytesReceived += r.bytesReceived
    for (const [k, v] of Object.entries(r.counters))
      out.counters[k] = k.startsWith('max_') ? Math.max(out.counters[k] ?? 0, v) : (out.counters[k] ?? 0) + v
    for (const [k, v] of Object.entries(r.errors)) out.errors[k] = (out.errors[k] ?? 0) + v
    for (const n of r.notes) if (!out.notes.includes(n) && out.notes.length < MAX_NOTES) out.notes.push(n)
    if (r.failed && !out.failed) out.failed = r.failed
  }
  out.amplification = out.bytesSent === 0 ? 0 : Math.round((out.bytesReceived / out.bytesSent) * 1000) / 1000
  return out
}
