/**
 * Bootstrap loss (issue 12): a loopback mesh forms through its bootstrap nodes; then every bootstrap
 * node is SIGKILLed. Afterwards:
 *
 * 1. new members, each started knowing one member only (`--dial` it; their static peers are the dead
 *    bootstrap nodes), must become topic peers of the members: found through each other, by member
 *    exchange, with no rendezvous point left (`newMemberMs`: spawn to every member satisfied again);
 * 2. members SIGKILLed and restarted on their data dir, whose static peers are all dead, must rejoin
 *    from their peer cache (`rejoinMs`: spawn to satisfied).
 *
 * Topics: one, or two when `peers` >= 8 (the second for half of the peers). Satisfied: min(k, members-1)
 * live topic peers in each of a node's topics.
 */
import { LoopbackMesh, type MeshNodeHandle } from './scenario.js'

export interface BootstrapLossOptions {
  root: string
  /** Peers before the bootstrap nodes go. @default 6 */
  peers?: number
  bootstraps?: number
  /** New members after the loss. @default 2 */
  newMembers?: number
  /** Members restarted from their peer cache after the loss. @default 2 */
  restarts?: number
  /** connectionsPerTopic. @default 8 */
  k?: number
  /** Longest wait for each step. @default 60000 */
  timeoutMs?: number
  log?: (text: string) => void
}

export interface BootstrapLossReport {
  peers: number
  bootstraps: number
  formationMs: number | null
  /** Members that stayed satisfied right after the bootstrap nodes died (their topic peers are members). */
  satisfiedAfterLoss: boolean
  /** Per new member: from its spawn until every live member is satisfied again (null: not in time). */
  newMemberMs: Array<number | null>
  /** New members that every old member of their topics counts as a topic peer (when k allows all). */
  newMembersKnownByAll: number
  /** Per restarted member: from its spawn until it is satisfied (null: not in time). */
  rejoinMs: Array<number | null>
  /** Whether each restarted node dialled a peer from its cache (bootstrap:connected source peer-cache). */
  rejoinedFromCache: boolean[]
  /**
   * How each was restarted: `peer-cache only` (datastore 'memory': nothing else knows a live peer) or
   * `persistent datastore` (kad-dht also restores its routing table from the peer store and dials it).
   */
  rejoinModes: string[]
  problems: string[]
  ms: number
}

export async function runBootstrapLoss(options: BootstrapLossOptions): Promise<BootstrapLossReport> {
  const t0 = Date.now()
  const log = options.log ?? (() => {})
  const k = options.k ?? 8
  const timeout = options.timeoutMs ?? 60_000
  const peers = options.peers ?? 6
  const mesh = new LoopbackMesh({ root: options.root, kadTopics: { connectionsPerTopic: k }, log })
  const report: BootstrapLossReport = {
    peers,
    bootstraps: options.bootstraps ?? 3,
    formationMs: null,
    satisfiedAfterLoss: false,
    newMemberMs: [],
    newMembersKnownByAll: 0,
    rejoinMs: [],
    rejoinedFromCache: [],
    rejoinModes: [],
    problems: [],
    ms: 0,
  }
  const topicsOf = (i: number) => (peers >= 8 && i % 2 === 0 ? ['boot-loss', 'boot-loss-b'] : ['boot-loss'])
  try {
    const boots = await mesh.startBootstraps(report.bootstraps)
    const members: MeshNodeHandle[] = []
    for (let i = 0; i < peers; i++) members.push(mesh.startPeer(`m${i}`, topicsOf(i)))
    await Promise.all(members.map((m) => m.proc.waitStarted(60_000)))
    report.formationMs = await mesh.waitSatisfied(k, timeout)
    log(`formed: ${report.formationMs} ms`)
    if (report.formationMs === null) report.problems.push('the mesh did not form')
    // give the peer caches time to be written (flushInterval 1 s)
    await new Promise((r) => setTimeout(r, 1500))

    await Promise.all(boots.map((b) => b.proc.kill()))
    log('bootstrap nodes killed')
    await new Promise((r) => setTimeout(r, 500))
    report.satisfiedAfterLoss = members.every((m) => mesh.satisfied(m, k))

    // 1. new members, each knowing one member only
    for (let j = 0; j < (options.newMembers ?? 2); j++) {
      const via = members[j % members.length]
      const address = via.proc.addresses[0]
      const fresh = mesh.startPeer(`new${j}`, topicsOf(j), [address])
      const spawned = fresh.proc.spawnedAt
      await fresh.proc.waitStarted(60_000)
      const ms = await mesh.waitSatisfied(k, timeout)
      report.newMemberMs.push(ms === null ? null : Date.now() - spawned)
      if (ms === null)
        report.problems.push(`new member ${fresh.name} (via ${via.name}): the mesh was not satisfied in time`)
      log(`new member ${fresh.name}: ${ms === null ? 'NOT satisfied' : `${Date.now() - spawned} ms`}`)
      members.push(fresh)
    }
    const live = () => members.filter((m) => m.proc.alive)
    for (const fresh of members.filter((m) => m.name.startsWith('new'))) {
      const others = live().filter((m) => m !== fresh && m.topics.some((t) => fresh.topics.includes(t)))
      if (
        others.every((o) =>
          o.topics
            .filter((t) => fresh.topics.includes(t))
            .every((t) => o.views.get(t)?.has(fresh.proc.peerId!)),
        )
      )
        report.newMembersKnownByAll++
    }

    // 2. restarts from the peer cache (static peers all dead)
    for (let j = 0; j < (options.restarts ?? 2); j++) {
      const node = members[members.length - 1 - (options.newMembers ?? 2) - j] ?? members[j]
      await node.proc.kill()
      await new Promise((r) => setTimeout(r, 300))
      // alternately: only the peer cache can help (memory datastore), or the default persistent datastore
      const cacheOnly = j % 2 === 0
      mesh.restart(node, { memoryDatastore: cacheOnly })
      const via: string[] = []
      node.proc.on((l) => {
        if (l.event === 'bootstrap:connected') via.push(String(l.source))
      })
      const spawned = node.proc.spawnedAt
      await node.proc.waitStarted(60_000)
      const ms = await mesh.waitSatisfied(k, timeout, () => [node])
      report.rejoinMs.push(ms === null ? null : Date.now() - spawned)
      report.rejoinedFromCache.push(ms !== null && via.includes('peer-cache'))
      report.rejoinModes.push(cacheOnly ? 'peer-cache only' : 'persistent datastore')
      if (ms === null)
        report.problems.push(`restarted ${node.name} did not rejoin its topics from its peer cache`)
      log(
        `restarted ${node.name} (${cacheOnly ? 'peer cache only' : 'persistent datastore'}): ${ms === null ? 'NOT rejoined' : `${Date.now() - spawned} ms`} via ${via.join(' ') || 'no bootstrap dial'}`,
      )
    }
    const all = await mesh.waitSatisfied(k, timeout)
    if (all === null) report.problems.push('the mesh was not satisfied at the end')
  } finally {
    await mesh.close()
    report.ms = Date.now() - t0
  }
  return report
}
