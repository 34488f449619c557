/**
 * What every node of a churn run saw, from its own `--json` lines, on one clock (the children's
 * Date.now(), the same machine): connections opened and closed (`mesh peers`), topic peers added and lost
 * (`mesh topics`), topics joined; plus when each process was spawned and killed (the benchmark's clock,
 * the same one). Replaying it answers, for any moment, who is satisfied: a live member of a topic has
 * min(k, members - 1) live topic peers, where a live topic peer is a peer in its topic view to which it
 * has an open connection belonging to that peer's current, live process (a restarted identity's old,
 * dead connection does not count).
 */
import type { MeshLine, MeshProc } from './fleet.js'

/** One process of a peer slot (a slot's identity may live through several incarnations). */
export interface Incarnation {
  readonly id: number
  readonly slot: string
  readonly topics: readonly string[]
  readonly spawnedAt: number
  peerId?: string
  startedAt?: number
  readonly joinedAt: Map<string, number>
  diedAt?: number
  /** The wave that started it (0: the initial mesh). */
  readonly wave: number
  readonly kind: 'bootstrap' | 'initial' | 'restart' | 'new'
}

type RecordKind = 'open' | 'close' | 'add' | 'del'

interface Rec {
  t: number
  seq: number
  at: number
  kind: RecordKind
  /** Connection id (open/close) or topic (add/del). */
  key: string
  peer: string
}

export interface Satisfaction {
  /** Every live member of every topic has its live topic peers. */
  all: boolean
  /** The same, over members that are not replacements started in `wave` (or later). */
  survivors: boolean
  /** (member, topic) pairs short of live topic peers. */
  short: number
  /** Live (member, topic) pairs. */
  pairs: number
}

/** Records every process's view; `replay()` walks it in time order. */
export class Timeline {
  readonly incarnations: Incarnation[] = []
  readonly #records: Rec[] = []
  #seq = 0

  constructor(readonly k: number) {}

  /** Starts recording a process; returns its incarnation. */
  track(proc: MeshProc, slot: string, topics: readonly string[], wave: number, kind: Incarnation['kind']) {
    const inc: Incarnation = {
      id: this.incarnations.length,
      slot,
      topics,
      spawnedAt: proc.spawnedAt,
      joinedAt: new Map(),
      wave,
      kind,
    }
    this.incarnations.push(inc)
    proc.on((line: MeshLine) => this.#record(inc, line))
    void proc.exited.then(() => {
      inc.diedAt ??= proc.killedAt ?? proc.exitedAt
    })
    return inc
  }

  /** Marks an incarnation dead at `at` (the moment of its SIGKILL). */
  died(inc: Incarnation, at: number): void {
    inc.diedAt ??= at
  }

  get records(): number {
    return this.#records.length
  }

  #record(inc: Incarnation, line: MeshLine): void {
    const t = typeof line.time === 'number' ? line.time : Date.now()
    switch (line.event) {
      case 'started':
        inc.peerId = String(line.peerId)
        inc.startedAt = t
        return
      case 'topic:joined':
        if (!inc.joinedAt.has(String(line.topic))) inc.joinedAt.set(String(line.topic), t)
        return
      case 'connection:open':
        this.#push(t, inc, 'open', String(line.connectionId), String(line.peerId))
        return
      case 'connection:close':
        this.#push(t, inc, 'close', String(line.connectionId), String(line.peerId))
        return
      case 'topic:peer':
        this.#push(t, inc, 'add', String(line.topic), String(line.peerId))
        return
      case 'topic:peer:lost':
        this.#push(t, inc, 'del', String(line.topic), String(line.peerId))
        return
    }
  }

  #push(t: number, inc: Incarnation, kind: RecordKind, key: string, peer: string): void {
    this.#records.push({ t, seq: this.#seq++, at: inc.id, kind, key, peer })
  }

  /** A replay from the beginning of the run. */
  replay(): Replay {
    const sorted = [...this.#records].sort((a, b) => a.t - b.t || a.seq - b.seq)
    return new Replay(this, sorted)
  }
}

/** The state of every node at a moment, moved forward with {@link Replay.advance}. */
export class Replay {
  /** node -> connection id -> remote incarnation id (-1: unknown) */
  readonly conns = new Map<number, Map<string, { peer: string; remote: number }>>()
  /** node -> topic -> peers in its view */
  readonly views = new Map<number, Map<string, Set<string>>>()
  #next = 0
  now = 0
  readonly #byPeer = new Map<string, Incarnation[]>()

  constructor(
    readonly timeline: Timeline,
    readonly recs: readonly Rec[],
  ) {}

  /** The incarnation of `peer` running at `t` (the latest spawned at or before `t`). */
  incarnationOf(peer: string, t: number): Incarnation | undefined {
    let list = this.#byPeer.get(peer)
    if (!list) {
      list = this.timeline.incarnations
        .filter((i) => i.peerId === peer)
        .sort((a, b) => a.spawnedAt - b.spawnedAt)
      if (list.length > 0) this.#byPeer.set(peer, list)
    }
    let found: Incarnation | undefined
    for (const i of list) if (i.spawnedAt <= t + 5) found = i
    return found
  }

  /** Forgets the peer index (call after new incarnations got their peer id). */
  reindex(): void {
    this.#byPeer.clear()
  }

  /** The time of the next record, or Infinity. */
  get nextTime(): number {
    return this.#next < this.recs.length ? this.recs[this.#next].t : Number.POSITIVE_INFINITY
  }

  /** Applies every record at or before `t`; returns the nodes whose state changed. */
  advance(t: number): Set<number> {
    const touched = new Set<number>()
    while (this.#next < this.recs.length && this.recs[this.#next].t <= t) {
      const r = this.recs[this.#next++]
      touched.add(r.at)
      if (r.kind === 'open') {
        upsert(this.conns, r.at, () => new Map()).set(r.key, {
          peer: r.peer,
          remote: this.incarnationOf(r.peer, r.t)?.id ?? -1,
        })
      } else if (r.kind === 'close') {
        this.conns.get(r.at)?.delete(r.key)
      } else {
        const s = upsert(
          upsert(this.views, r.at, () => new Map()),
          r.key,
          () => new Set<string>(),
        )
        if (r.kind === 'add') s.add(r.peer)
        else s.delete(r.peer)
      }
    }
    this.now = Math.max(this.now, t)
    return touched
  }

  alive(inc: Incarnation, t: number): boolean {
    return inc.spawnedAt <= t && (inc.diedAt === undefined || inc.diedAt > t)
  }

  /** Whether node `at` has an open connection to the live, current process of `peer` at `t`. */
  liveLink(at: number, peer: string, t: number): boolean {
    const cur = this.incarnationOf(peer, t)
    if (!cur || !this.alive(cur, t)) return false
    for (const c of this.conns.get(at)?.values() ?? [])
      if (c.peer === peer && c.remote === cur.id) return true
    return false
  }

  /** Live members of `topic` at `t`: alive and joined it. */
  members(topic: string, t: number): Incarnation[] {
    return this.timeline.incarnations.filter(
      (i) => this.alive(i, t) && (i.joinedAt.get(topic) ?? Number.POSITIVE_INFINITY) <= t,
    )
  }

  /** Who is satisfied at `t` (after `advance(t)`); `wave`: replacements of this wave or later are not survivors. */
  satisfaction(topics: readonly string[], t: number, wave: number): Satisfaction {
    let all = true
    let survivors = true
    let short = 0
    let pairs = 0
    for (const topic of topics) {
      const members = this.members(topic, t)
      const need = Math.min(this.timeline.k, members.length - 1)
      for (const m of members) {
        pairs++
        let live = 0
        for (const peer of this.views.get(m.id)?.get(topic) ?? []) {
          if (this.liveLink(m.id, peer, t)) live++
          if (live >= need) break
        }
        if (live < need) {
          short++
          all = false
          if (m.wave < wave || m.kind === 'bootstrap') survivors = false
        }
      }
    }
    return { all, survivors, short, pairs }
  }

  /**
   * Whether node `at` still shows `dead` (a killed incarnation) at `t`: an open connection of that dead
   * process (`mesh peers`), or its peer id in a topic view without a connection to a live process of it.
   */
  shows(at: number, dead: Incarnation, t: number): boolean {
    for (const c of this.conns.get(at)?.values() ?? []) if (c.remote === dead.id) return true
    const peer = dead.peerId
    if (!peer) return false
    for (const set of this.views.get(at)?.values() ?? [])
      if (set.has(peer) && !this.liveLink(at, peer, t)) return true
    return false
  }
}

/** The value of `key`, set to `make()` first when there is none. */
export function upsert<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let value = map.get(key)
  if (value === undefined) {
    value = make()
    map.set(key, value)
  }
  return value
}
