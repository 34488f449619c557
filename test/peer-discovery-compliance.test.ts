/**
 * The peer-discovery suite of @libp2p/interface-compliance-tests against kad-topics' PeerDiscovery
 * (TopicPeerDiscovery), fed by a real TopicManager on a real two-node mesh.
 *
 * kadTopics() does not expose its TopicPeerDiscovery (libp2p holds it as a peerDiscovery component),
 * so each setup builds one the way the plugin does: a TopicPeerDiscovery whose `discovered` is the
 * TopicManager's onDiscovered, the manager running on a Meshkit node's libp2p and DHT (that node's own
 * kadTopics() has memberExchange off, leaving the exchange protocol to this manager). The other node is
 * a member of the topic. As in the plugin, where libp2p starts the discovery before the plugin's
 * start() joins the configured topics, starting the discovery joins the topic (`afterStart`).
 * By then the manager already knows the member (from the exchange on connect, as a non-member), so
 * the suite's "peer event after start" needs join() to report members known before joining.
 */
import { join } from 'node:path'
import type { PeerDiscovery } from '@libp2p/interface'
import tests from '@libp2p/interface-compliance-tests/peer-discovery'
import type { KadDHT } from '@libp2p/kad-dht'
import { createBudget, createEventBus, createLogger, loadOrCreateIdentity } from 'meshkit'
import { TopicPeerDiscovery } from '../plugins/kad-topics/topic-discovery.js'
import { TopicManager } from '../plugins/kad-topics/topic-manager.js'
import { TopicTestMesh } from './fixtures/topics.js'
import { waitFor } from './helpers.js'

const TOPIC = 'compliance'

describe('kad-topics PeerDiscovery', function () {
  this.timeout(60_000)
  let mesh: TopicTestMesh | undefined
  let manager: TopicManager | undefined
  let abort: AbortController | undefined

  tests({
    async setup() {
      mesh = await TopicTestMesh.create('meshkit-compliance-')
      const member = await mesh.start({ topics: [TOPIC], dial: [], label: 'member' })
      const host = await mesh.start({
        dial: [member.addr],
        kad: { memberExchange: false },
        label: 'host',
        dirName: 'host',
      })
      // the host's own key (its identity file): the manager signs the host's member records with it
      const { privateKey } = await loadOrCreateIdentity(join(mesh.dir, 'host'))
      const discovery = new TopicPeerDiscovery()
      abort = new AbortController()
      const m = new TopicManager(
        host.libp2p,
        host.libp2p.services.dht as KadDHT,
        {
          namespace: 'meshkit',
          connectionsPerTopic: 8,
          queryTimeout: 10_000,
          memberExchange: true,
          lookupBackoff: { initial: 250, max: 5_000 },
          refreshInterval: 300_000,
          memberTtl: 900_000,
          maxPeersPerNetwork: 2,
        },
        createLogger({ level: 'silent' }),
        createEventBus(),
        abort.signal,
        (peer) => discovery.discovered(peer),
        {
          privateKey,
          reputation: host.mesh.node.reputation,
          addresses: host.mesh.node.peerAddresses,
          budget: createBudget('topics'),
        },
      )
      manager = m
      await m.start()
      // the host knows the member (it answered the exchange the host started on connecting)
      const key = (await m.keyOf(TOPIC)).toString()
      await waitFor(() => m.registry.members(key).some(([id]) => id === member.peerId), {
        timeoutMs: 20_000,
        what: 'the host to know the topic member',
      })
      return Object.assign(discovery, {
        afterStart: () => {
          void m.join(TOPIC)
        },
      }) as PeerDiscovery
    },
    async teardown() {
      abort?.abort()
      await manager?.stop()
      await mesh?.stop()
      manager = undefined
      mesh = undefined
    },
  })
})
