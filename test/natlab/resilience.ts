/**
 * Issue 12's NAT-lab faults, as functions (test/natlab/resilience.test.ts runs them small, `npm run
 * bench:faults` at full size):
 *
 * - {@link runLossScenario}: N peers, each behind its own NAT (cone, restricted, port-restricted,
 *   symmetric in turn), one public relay; `loss`% random loss on every host's link (each host namespace
 *   drops that share of what enters and leaves it, relay included), set before anything starts. Measured:
 *   from the last peer's `started` until every peer has min(k, N - 1) topic peers it is connected to, and
 *   how the pairs ended up connected.
 * - {@link runRelayLossScenario}: two relays, peers holding one reservation each (minReservations 1);
 *   once every peer has its topic peers and the punchable pairs are hole-punched, the relay carrying the
 *   relayed-only pairs (symmetric + symmetric) is SIGKILLed. Measured: hole-punched pairs that lost
 *   their direct connection with it (should be none), the time until the relayed-only peers hold a
 *   reservation on the other relay, and until every peer has its topic peers again.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sleep } from '../../bench/churn/fleet.js'
import { createLab, type NatBehaviour } from './lab.js'
import { NatMesh, type NatMesh as NatMeshType, type NatPeer } from './mesh-lab.js'

export const NAT_CYCLE: NatBehaviour[] = ['full-cone', 'restricted-cone', 'port-restricted-cone', 'symmetric']

export interface LossOptions {
  peers: number
  /** NAT behaviours of the peers. @default NAT_CYCLE repeated */
  behaviours?: NatBehaviour[]
  /** Loss on every host link, percent. */
  loss: number
  k?: number
  timeoutMs?: number
  /** Longest wait for complete topic views once connected. @default what is left of timeoutMs */
  viewsWaitMs?: number
  log?: (text: string) => void
}

export interface LossResult {
  loss: number
  peers: number
  behaviours: NatBehaviour[]
  /**
   * From the last peer's `started` until every peer is connected (direct, hole-punched or relayed) to
   * min(k, N - 1) members that count it, or it counts, as topic peers: the mesh as a whole (null: not
   * within the timeout).
   */
  connectedMs: number | null
  /** From the last peer's `started` until every peer's own topic view has them (`mesh topics`). */
  rendezvousMs: number | null
  /** From the first peer's spawn to every peer satisfied. */
  totalMs: number | null
  /** Every peer's own topic view complete before the timeout. */
  viewsComplete: boolean
  /** Peers with all their topic peers in their own view at the end. */
  satisfiedPeers: number
  /** Per peer: topic peers connected at the end. */
  topicPeers: Record<string, number>
  /** Pairs of peers by their best connection at the end. */
  pairs: { direct: number; holePunched: number; relayed: number; none: number }
  /** connection:method outcomes seen (all peers). */
  methods: Record<string, number>
  problems: string[]
  wallMs: number
}

async function withLab<T>(
  fn: (lab: Awaited<ReturnType<typeof createLab>>, dir: string) => Promise<T>,
): Promise<T> {
  const lab = await createLab()
  const dir = await mkdtemp(join(tmpdir(), 'natlab-mesh-'))
  try {
    return await fn(lab, dir)
  } finally {
    await lab.destroy().catch(() => {})
    await rm(dir, { recursive: true, force: true }).catch(() => {})
  }
}

function methodCounts(mesh: NatMeshType): Record<string, number> {
  const out: Record<string, number> = {}
  for (const p of mesh.peers)
    for (const m of p.methods.values())
      out[`${m.method}/${m.transport}`] = (out[`${m.method}/${m.transport}`] ?? 0) + 1
  return out
}

export async function runLossScenario(options: LossOptions): Promise<LossResult> {
  const t0 = Date.now()
  const log = options.log ?? (() => {})
  return withLab(async (lab, dir) => {
    const mesh = new NatMesh({ lab, dir, k: options.k, log, topic: 'loss-topic' })
    const behaviours =
      options.behaviours ?? Array.from({ length: options.peers }, (_, i) => NAT_CYCLE[i % NAT_CYCLE.length])
    const result: LossResult = {
      loss: options.loss,
      peers: options.peers,
      behaviours,
      connectedMs: null,
      rendezvousMs: null,
      totalMs: null,
      viewsComplete: false,
      satisfiedPeers: 0,
      topicPeers: {},
      pairs: { direct: 0, holePunched: 0, relayed: 0, none: 0 },
      methods: {},
      problems: [],
      wallMs: 0,
    }
    try {
      const relayHost = await lab.addPublicHost({ addresses: 2 })
      const sites = []
      for (const b of behaviours) sites.push(await lab.addNatSite(b))
      // loss on every host link, before anything runs
      for (const h of [relayHost, ...sites.map((s) => s.host)]) await lab.setLoss(h, options.loss)
      log(`lab ready (${options.peers} NAT sites, ${options.loss}% loss on every host link)`)
      await mesh.startRelays([relayHost])
      const peers: NatPeer[] = []
      for (let i = 0; i < sites.length; i++) peers.push(await mesh.startPeer(sites[i].host, behaviours[i]))
      const firstSpawn = Math.min(...peers.map((p) => p.proc.spawnedAt))
      await Promise.all(peers.map((p) => p.proc.waitStarted(120_000)))
      const lastStarted = Date.now()
      log(`${peers.length} peers started in ${lastStarted - firstSpawn} ms`)
      const timeout = options.timeoutMs ?? 120_000
      result.connectedMs = await mesh.waitSatisfied(timeout, 'connected')
      if (result.connectedMs === null)
        result.problems.push('not every peer got connected to its topic peers in time')
      // the views, given a little more time after the connections (bounded by the same timeout)
      const left = options.viewsWaitMs ?? Math.max(5_000, timeout - (Date.now() - lastStarted))
      const views = await mesh.waitSatisfied(left, 'view')
      result.rendezvousMs = views === null ? null : Date.now() - lastStarted
      result.totalMs = views === null ? null : Date.now() - firstSpawn
      result.viewsComplete = views !== null
      // a little longer: the punches of the last connections
      await sleep(2000)
      for (const p of peers)
        result.topicPeers[p.name] = [...p.view].filter((id) => mesh.connectedTo(p, id)).length
      result.satisfiedPeers = peers.filter((p) => mesh.satisfied(p)).length
      result.pairs = mesh.pairSummary()
      result.methods = methodCounts(mesh)
      for (const p of peers) if (p.proc.exit) result.problems.push(`${p.name} exited: ${p.proc.describe()}`)
    } finally {
      await mesh.close()
      result.wallMs = Date.now() - t0
    }
    return result
  })
}

export interface RelayLossOptions {
  /** NAT behaviours of the peers; two symmetric ones make a relayed-only pair. */
  behaviours?: NatBehaviour[]
  k?: number
  timeoutMs?: number
  log?: (text: string) => void
}

export interface RelayLossResult {
  behaviours: NatBehaviour[]
  formationMs: number | null
  /**
   * Pairs of peers with a hole-punched (WebRTC) connection when the relay was killed, and how many of
   * them had none left afterwards (a pair may hold two: each side's upgrade; one closing is no loss).
   */
  punchedPairsBefore: number
  punchedPairsLost: number
  /** Those WebRTC connections one by one: open at the kill, closed within the following seconds. */
  punchedConnections: number
  punchedConnectionsClosed: number
  /** Relayed-only pairs (both symmetric) whose relayed connection went through the killed relay. */
  relayedPairs: number
  /** Per relayed-only peer: kill -> its reservation on the other relay (relay:reserved). */
  reReserveMs: Array<number | null>
  /** Kill -> every peer connected to its topic peers again (the relayed-only pairs through the other relay). */
  reconnectMs: number | null
  /** Kill -> the relayed-only pairs connected again (through the other relay). */
  relayedPairsBackMs: number | null
  pairsBefore: { direct: number; holePunched: number; relayed: number; none: number }
  pairsAfter: { direct: number; holePunched: number; relayed: number; none: number }
  problems: string[]
  wallMs: number
}

export async function runRelayLossScenario(options: RelayLossOptions = {}): Promise<RelayLossResult> {
  const t0 = Date.now()
  const log = options.log ?? (() => {})
  const behaviours = options.behaviours ?? ['full-cone', 'port-restricted-cone', 'symmetric', 'symmetric']
  return withLab(async (lab, dir) => {
    const mesh = new NatMesh({ lab, dir, k: options.k, log, topic: 'relay-topic', minReservations: 1 })
    const result: RelayLossResult = {
      behaviours,
      formationMs: null,
      punchedPairsBefore: 0,
      punchedPairsLost: 0,
      punchedConnections: 0,
      punchedConnectionsClosed: 0,
      relayedPairs: 0,
      reReserveMs: [],
      reconnectMs: null,
      relayedPairsBackMs: null,
      pairsBefore: { direct: 0, holePunched: 0, relayed: 0, none: 0 },
      pairsAfter: { direct: 0, holePunched: 0, relayed: 0, none: 0 },
      problems: [],
      wallMs: 0,
    }
    const timeout = options.timeoutMs ?? 120_000
    try {
      const relayHosts = [
        await lab.addPublicHost({ addresses: 2 }),
        await lab.addPublicHost({ addresses: 2 }),
      ]
      const sites = []
      for (const b of behaviours) sites.push(await lab.addNatSite(b))
      await mesh.startRelays(relayHosts)
      const peers: NatPeer[] = []
      for (let i = 0; i < sites.length; i++) peers.push(await mesh.startPeer(sites[i].host, behaviours[i]))
      // which relay each peer reserved on
      const reservedOn = new Map<NatPeer, string>()
      for (const p of peers)
        p.proc.on((l) => {
          if (l.event === 'relay:reserved') reservedOn.set(p, String(l.relay))
        })
      await Promise.all(peers.map((p) => p.proc.waitStarted(120_000)))
      result.formationMs = await mesh.waitSatisfied(timeout, 'connected')
      if (result.formationMs === null) result.problems.push('the mesh did not form')
      // the punchable pairs hole-punched (bounded wait)
      const punchable = (a: NatPeer, b: NatPeer) =>
        !(a.behaviour === 'symmetric' && b.behaviour === 'symmetric')
      const deadline = Date.now() + 30_000
      const allPunched = () =>
        peers.every((a) =>
          peers.every((b) => a === b || !punchable(a, b) || mesh.directTo(a, b.proc.peerId!)),
        )
      while (!allPunched() && Date.now() < deadline) await sleep(200)
      result.pairsBefore = mesh.pairSummary()
      log(`formed in ${result.formationMs} ms; pairs ${JSON.stringify(result.pairsBefore)}`)

      // the relay carrying the relayed-only pairs
      const symmetric = peers.filter((p) => p.behaviour === 'symmetric')
      const viaRelay = new Map<string, number>()
      for (const a of symmetric)
        for (const c of a.conns.values()) {
          if (!c.relayed || !symmetric.some((b) => b.proc.peerId === c.peer)) continue
          for (const r of mesh.relays)
            if (connRemoteVia(a, c.peer, r.proc.peerId!))
              viaRelay.set(r.name, (viaRelay.get(r.name) ?? 0) + 1)
        }
      const victim =
        mesh.relays.find((r) => r.name === [...viaRelay.entries()].sort((x, y) => y[1] - x[1])[0]?.[0]) ??
        mesh.relays.find((r) => symmetric.some((p) => reservedOn.get(p) === r.proc.peerId)) ??
        mesh.relays[0]
      result.relayedPairs = Math.floor((viaRelay.get(victim.name) ?? 0) / 2)
      const punched = peers.flatMap((p) =>
        [...p.conns.entries()].filter(([, c]) => c.transport === 'webrtc').map(([id]) => ({ p, id })),
      )
      result.punchedConnections = punched.length
      const pairKey = (a: string, b: string) => [a, b].sort().join('+')
      const punchedPairs = () =>
        new Set(
          peers.flatMap((p) =>
            [...p.conns.values()]
              .filter((c) => c.transport === 'webrtc')
              .map((c) => pairKey(p.proc.peerId!, c.peer)),
          ),
        )
      const pairsAtKill = punchedPairs()
      result.punchedPairsBefore = pairsAtKill.size
      const other = mesh.relays.find((r) => r !== victim)!
      const affected = symmetric.filter((p) => reservedOn.get(p) === victim.proc.peerId)
      const reReserved = affected.map((p) =>
        p.proc
          .waitFor(
            (l) => l.event === 'relay:reserved' && l.relay === other.proc.peerId,
            timeout,
            'a reservation',
          )
          .then(
            () => Date.now(),
            () => null,
          ),
      )
      const killAt = Date.now()
      await victim.proc.kill()
      log(
        `killed ${victim.name} (${affected.length} relayed-only peers reserved on it, ${punched.length} punched connections)`,
      )
      await sleep(300)
      const symmetricBack = async () => {
        while (Date.now() - killAt < timeout) {
          // connected again (through the other relay): a relayed-only pair has no other way
          const ok = symmetric.every((a) =>
            symmetric.every((b) => a === b || mesh.connectedTo(a, b.proc.peerId!)),
          )
          if (ok) return Date.now() - killAt
          await sleep(100)
        }
        return null
      }
      const [back, all] = await Promise.all([
        symmetricBack(),
        mesh.waitSatisfied(timeout, 'connected').then((ms) => (ms === null ? null : Date.now() - killAt)),
      ])
      result.relayedPairsBackMs = back
      result.reconnectMs = all
      result.reReserveMs = (await Promise.all(reReserved)).map((t) => (t === null ? null : t - killAt))
      // punched connections must have stayed up (a short grace for their close events)
      await sleep(1000)
      result.punchedConnectionsClosed = punched.filter(({ p, id }) => !p.conns.has(id)).length
      const pairsNow = punchedPairs()
      result.punchedPairsLost = [...pairsAtKill].filter((k) => !pairsNow.has(k)).length
      result.pairsAfter = mesh.pairSummary()
      if (back === null) result.problems.push('the relayed-only peers did not reach each other again')
      if (all === null) result.problems.push('not every peer had its topic peers again')
      for (const p of peers) if (p.proc.exit) result.problems.push(`${p.name} exited: ${p.proc.describe()}`)
    } finally {
      await mesh.close()
      result.wallMs = Date.now() - t0
    }
    return result
  })
}

/** Whether `peer`'s relayed connection to `remote` goes through relay `relayId` (its address names it). */
function connRemoteVia(peer: NatPeer, remote: string, relayId: string): boolean {
  for (const c of peer.conns.values())
    if (c.peer === remote && c.relayed && c.remoteAddr.includes(`/p2p/${relayId}/p2p-circuit`)) return true
  return false
}
