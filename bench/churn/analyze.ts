/**
 * The churn run's numbers, from one replay of its timeline (see timeline.ts): formation, per wave the
 * heal time, how long dead peers lingered in survivors' views, the replacements' start and join times,
 * and the fraction of sampled moments in which every live member was satisfied.
 */
import { percentile } from './fleet.js'
import type { Incarnation, Replay, Timeline } from './timeline.js'

export interface WaveInput {
  wave: number
  killAt: number
  victims: Incarnation[]
  replacements: Incarnation[]
}

export interface WaveResult {
  wave: number
  killed: number
  restarted: number
  new_identities: number
  /** From the kill until every live member (replacements included, once all joined) is satisfied. */
  heal_ms: number | null
  /** From the kill until every member that was there before the kill is satisfied. */
  survivors_heal_ms: number | null
  /** Replacements: spawn to `started` (median, max). */
  replacement_start_ms: { p50: number; max: number }
  /** Replacements: `started` to satisfied in all their topics (median, max; null: never in the window). */
  replacement_join_ms: { p50: number | null; max: number | null; unsatisfied: number }
  /** (survivor, dead peer) pairs that showed the dead peer at the kill. */
  stale_pairs: number
  /** How long they kept showing it (ms after the kill): p50, p99, max; `censored`: still at window end. */
  stale_ms: { p50: number; p99: number; max: number; censored: number }
  /** Sampled moments in the window with every live member satisfied. */
  satisfied_fraction: number
  /** The same, outside the heal window (from heal to the next wave). */
  satisfied_fraction_after_heal: number | null
  /** Most (member, topic) pairs short at once in the window. */
  max_short: number
  window_ms: number
}

export interface RunAnalysis {
  /** From the last initial peer's spawn until every member is satisfied (null: never). */
  formation_ms: number | null
  waves: WaveResult[]
  /** Over all waves' samples outside heal windows. */
  satisfied_fraction: number
  satisfied_fraction_all: number
  stale_all_ms: number[]
  stale_censored: number
}

interface StalePair {
  at: Incarnation
  dead: Incarnation
  since: number
  done?: number
}

export function analyze(
  timeline: Timeline,
  topics: readonly string[],
  initial: Incarnation[],
  waves: WaveInput[],
  end: number,
  sampleMs = 250,
): RunAnalysis {
  const replay = timeline.replay()
  const incs = timeline.incarnations
  const joinedAll = (i: Incarnation) => i.topics.every((t) => i.joinedAt.has(t))
  const joinTime = (i: Incarnation) =>
    joinedAll(i) ? Math.max(...i.topics.map((t) => i.joinedAt.get(t)!)) : Number.POSITIVE_INFINITY
  const satisfiedSelf = (r: Replay, i: Incarnation, t: number) => {
    for (const topic of i.topics) {
      const members = r.members(topic, t)
      const need = Math.min(timeline.k, members.length - 1)
      let live = 0
      for (const peer of r.views.get(i.id)?.get(topic) ?? []) if (r.liveLink(i.id, peer, t)) live++
      if (live < need) return false
    }
    return true
  }

  // the moments at which something can change, plus the sampling grid
  const lastInitialJoin = Math.max(...initial.map(joinTime))
  const formationStart = Math.max(...initial.map((i) => i.spawnedAt))
  const moments = new Set<number>()
  for (const r of replay.recs) moments.add(r.t)
  for (const i of incs) {
    for (const t of i.joinedAt.values()) moments.add(t)
    if (i.diedAt !== undefined) moments.add(i.diedAt)
    if (i.startedAt !== undefined) moments.add(i.startedAt)
  }
  const firstWave = waves[0]?.killAt ?? end
  const samples: Array<{ t: number; ok: boolean; short: number }> = []
  for (
    let t = Math.min(firstWave, Number.isFinite(lastInitialJoin) ? lastInitialJoin : end);
    t <= end;
    t += sampleMs
  )
    moments.add(t)
  for (const w of waves) moments.add(w.killAt)
  const times = [...moments].filter((t) => t <= end).sort((a, b) => a - b)

  let formation: number | null = null
  const results = waves.map((w, idx) => ({
    w,
    until: waves[idx + 1]?.killAt ?? end,
    heal: null as number | null,
    survivorsHeal: null as number | null,
    joins: new Map<number, number>(),
    stale: [] as StalePair[],
    samples: [] as Array<{ t: number; ok: boolean }>,
    maxShort: 0,
  }))
  let cur = -1
  const isGrid = new Set<number>()
  for (
    let t = Math.min(firstWave, Number.isFinite(lastInitialJoin) ? lastInitialJoin : end);
    t <= end;
    t += sampleMs
  )
    isGrid.add(t)

  for (const t of times) {
    const touched = replay.advance(t)
    while (cur + 1 < results.length && results[cur + 1].w.killAt <= t) {
      cur++
      const wr = results[cur]
      // who shows each victim right at the kill
      for (const at of incs) {
        if (!replay.alive(at, t) || wr.w.victims.includes(at)) continue
        for (const dead of wr.w.victims)
          if (replay.shows(at.id, dead, wr.w.killAt)) wr.stale.push({ at, dead, since: wr.w.killAt })
      }
    }
    if (formation === null && cur < 0 && t >= lastInitialJoin) {
      if (replay.satisfaction(topics, t, 0).all) formation = t - formationStart
    }
    if (cur >= 0) {
      const wr = results[cur]
      const { w } = wr
      const allJoined = w.replacements.every(
        (i) => joinTime(i) <= t || (i.diedAt !== undefined && i.diedAt <= t),
      )
      if (wr.heal === null || wr.survivorsHeal === null || isGrid.has(t)) {
        const s = replay.satisfaction(topics, t, w.wave)
        wr.maxShort = Math.max(wr.maxShort, s.short)
        if (wr.survivorsHeal === null && s.survivors) wr.survivorsHeal = t - w.killAt
        if (wr.heal === null && allJoined && s.all) wr.heal = t - w.killAt
        if (isGrid.has(t)) wr.samples.push({ t, ok: s.all })
      }
      for (const i of w.replacements) {
        if (wr.joins.has(i.id) || !joinedAll(i) || joinTime(i) > t || !replay.alive(i, t)) continue
        if (!touched.has(i.id) && !isGrid.has(t)) continue
        if (satisfiedSelf(replay, i, t)) wr.joins.set(i.id, t - (i.startedAt ?? i.spawnedAt))
      }
      for (const p of wr.stale) {
        if (p.done !== undefined) continue
        if (p.at.diedAt !== undefined && p.at.diedAt <= t) {
          p.done = Number.NaN // observer gone: not counted
          continue
        }
        if (touched.has(p.at.id) && !replay.shows(p.at.id, p.dead, t)) p.done = t
      }
    } else if (isGrid.has(t) && formation !== null) {
      samples.push({ t, ok: replay.satisfaction(topics, t, 0).all, short: 0 })
    }
  }

  const staleAll: number[] = []
  let censoredAll = 0
  const waveResults: WaveResult[] = results.map((wr) => {
    const { w } = wr
    const stale: number[] = []
    let censored = 0
    for (const p of wr.stale) {
      if (Number.isNaN(p.done)) continue
      if (p.done === undefined || p.done > wr.until) {
        censored++
        stale.push(wr.until - p.since)
      } else stale.push(p.done - p.since)
    }
    staleAll.push(...stale)
    censoredAll += censored
    const starts = w.replacements.filter((i) => i.startedAt).map((i) => i.startedAt! - i.spawnedAt)
    const joins = [...wr.joins.values()]
    const healEnd = wr.heal === null ? wr.until : w.killAt + wr.heal
    const after = wr.samples.filter((s) => s.t >= healEnd)
    return {
      wave: w.wave,
      killed: w.victims.length,
      restarted: w.replacements.filter((i) => i.kind === 'restart').length,
      new_identities: w.replacements.filter((i) => i.kind === 'new').length,
      heal_ms: wr.heal,
      survivors_heal_ms: wr.survivorsHeal,
      replacement_start_ms: { p50: percentile(starts, 50), max: Math.max(...starts) },
      replacement_join_ms: {
        p50: joins.length ? percentile(joins, 50) : null,
        max: joins.length ? Math.max(...joins) : null,
        unsatisfied: w.replacements.length - joins.length,
      },
      stale_pairs: stale.length,
      stale_ms: {
        p50: percentile(stale, 50),
        p99: percentile(stale, 99),
        max: stale.length ? Math.max(...stale) : Number.NaN,
        censored,
      },
      satisfied_fraction: fraction(wr.samples.map((s) => s.ok)),
      satisfied_fraction_after_heal: after.length ? fraction(after.map((s) => s.ok)) : null,
      max_short: wr.maxShort,
      window_ms: wr.until - w.killAt,
    }
  })
  const outside = [
    ...samples.map((s) => s.ok),
    ...results.flatMap((wr) => {
      const healEnd = wr.heal === null ? wr.until : wr.w.killAt + wr.heal
      return wr.samples.filter((s) => s.t >= healEnd).map((s) => s.ok)
    }),
  ]
  return {
    formation_ms: formation,
    waves: waveResults,
    satisfied_fraction: fraction(outside),
    satisfied_fraction_all: fraction([
      ...samples.map((s) => s.ok),
      ...results.flatMap((wr) => wr.samples.map((s) => s.ok)),
    ]),
    stale_all_ms: staleAll,
    stale_censored: censoredAll,
  }
}

function fraction(values: boolean[]): number {
  if (values.length === 0) return Number.NaN
  return Math.round((values.filter(Boolean).length / values.length) * 10_000) / 10_000
}
