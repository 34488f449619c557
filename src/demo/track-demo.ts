/** Tracking a started demo: rendezvous per topic, the observer kept connected, the summary, stop(). */
import type { ClusteringSlotApi, ClusterView, DiscoverySlotApi, RunningMesh } from 'meshkit'
import type { ControlServer } from '../control/index.js'
import { CONNECTIONS_PER_TOPIC, demoMembers } from './plan.js'
import type {
  DemoClusterSummary,
  DemoPeer,
  DemoProgress,
  DemoSummary,
  DemoTopicSummary,
  RunningDemo,
} from './types.js'

const CHECK_INTERVAL_MS = 200

interface TrackInput {
  url: string
  control: ControlServer
  observer: RunningMesh
  peers: DemoPeer[]
  dir: string
  t0: number
  startupMs: number
  topics: string[]
  progress: (event: DemoProgress) => void
  teardown: () => Promise<void>
}

/** Watches every topic until each member has its topic peers; keeps the summary current. */
export function trackDemo(input: TrackInput): RunningDemo {
  const { observer, peers, t0, progress } = input
  const members = demoMembers(peers.length, input.topics)
  const byIndex = new Map(peers.map((p) => [p.index, p]))
  const observerId = observer.node.peerId.toString()
  const state = input.topics.map((topic) => {
    const list = (members.get(topic) ?? []).map((i) => byIndex.get(i)!).filter(Boolean)
    const ids = new Set([...list.map((p) => p.peerId), observerId])
    return {
      topic,
      list,
      ids,
      target: Math.min(CONNECTIONS_PER_TOPIC, list.length),
      lastStart: Math.max(...list.map((p) => p.startedAt)),
      ready: 0,
      doneAt: undefined as number | undefined,
    }
  })
  const discovery = (mesh: RunningMesh) => mesh.node.api<DiscoverySlotApi>('discovery')
  const check = () => {
    for (const t of state) {
      if (t.doneAt !== undefined) continue
      t.ready = t.list.filter((p) => {
        const connected = discovery(p.mesh)
          .peers(t.topic)
          .filter((id) => t.ids.has(id) && id !== p.peerId)
        return connected.length >= t.target
      }).length
      if (t.ready === t.list.length) {
        t.doneAt = Date.now()
        progress({
          type: 'topic-rendezvous',
          topic: t.topic,
          members: t.list.length,
          ms: t.doneAt - t.lastStart,
          sinceStartMs: t.doneAt - t0,
        })
      }
    }
  }
  let completeSent = false
  // the observer keeps a connection to every demo peer, so that its dashboard shows the whole mesh
  // (a loaded machine drops a connection now and then; the peers themselves only keep their topic peers)
  const redialing = new Set<string>()
  let stopped = false
  const keepObserverConnected = () => {
    const libp2p = observer.node.libp2p
    const connected = new Set(libp2p.getPeers().map(String))
    for (const p of peers) {
      if (stopped || connected.has(p.peerId) || redialing.has(p.peerId) || redialing.size >= 4) continue
      const addr = p.mesh.node.libp2p.getMultiaddrs()[0]
      if (!addr) continue
      redialing.add(p.peerId)
      libp2p
        .dial(addr, { signal: AbortSignal.timeout(10_000) })
        .catch(() => {})
        .finally(() => redialing.delete(p.peerId))
    }
  }
  const keeper = setInterval(() => {
    if (!stopped) keepObserverConnected()
  }, 2_000)
  let finish: () => void = () => {}
  const rendezvous = new Promise<void>((resolve) => {
    finish = resolve
  })
  const timer = setInterval(() => {
    try {
      check()
    } catch {
      // a node that is stopping cannot answer; the next round (or stop) settles it
    }
    if (state.every((t) => t.doneAt !== undefined) && !completeSent) {
      completeSent = true
      progress({
        type: 'rendezvous-complete',
        topics: state.length,
        ms: Math.max(...state.map((t) => t.doneAt!)) - t0,
      })
      finish()
    }
  }, CHECK_INTERVAL_MS)

  let stoppedAt: number | undefined
  let clustersAtStop: DemoClusterSummary[] | undefined
  const clusters = (): DemoClusterSummary[] => {
    if (clustersAtStop) return clustersAtStop
    try {
      return observer.node
        .api<ClusteringSlotApi>('clustering')
        .clusters()
        .map((c: ClusterView) => ({
          id: c.id,
          tags: [...c.tags].sort(),
          members: c.members instanceof Map ? c.members.size : [...(c.members as Iterable<unknown>)].length,
        }))
        .sort((a, b) => b.members - a.members || a.id.localeCompare(b.id))
    } catch {
      return []
    }
  }
  const summary = (): DemoSummary => {
    const topics = state.map(
      (t): DemoTopicSummary => ({
        topic: t.topic,
        members: t.list.length,
        target: t.target,
        rendezvousMs: t.doneAt === undefined ? undefined : t.doneAt - t.lastStart,
        sinceStartMs: t.doneAt === undefined ? undefined : t.doneAt - t0,
        ready: t.doneAt === undefined ? t.ready : t.list.length,
      }),
    )
    return {
      peers: peers.length,
      startupMs: input.startupMs,
      runMs: (stoppedAt ?? Date.now()) - t0,
      topics,
      complete: topics.every((t) => t.rendezvousMs !== undefined),
      clusters: clusters(),
    }
  }
  let stopping: Promise<DemoSummary> | undefined
  return {
    url: input.url,
    control: input.control,
    observer,
    peers,
    dir: input.dir,
    rendezvous,
    summary,
    stop: () => {
      stopping ??= (async () => {
        clearInterval(timer)
        clearInterval(keeper)
        stopped = true
        stoppedAt = Date.now()
        clustersAtStop = clusters()
        const final = summary()
        finish()
        progress({ type: 'stopping', nodes: peers.length + 1 })
        await input.teardown()
        progress({ type: 'stopped', ms: Date.now() - stoppedAt })
        return final
      })()
      return stopping
    },
  }
}
