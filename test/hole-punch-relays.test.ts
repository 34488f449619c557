import { expect } from 'chai'
import { holePunch, identify, noise, ping, relayServer, tcp, yamux } from 'meshkit/plugins'
import { LoopbackNodes } from './fixtures/loopback-nodes.js'
import { freePort, tempDir, waitFor } from './helpers.js'

/**
 * `holePunch({ relays })` listens on each relay's `/p2p-circuit`. libp2p fails the whole start when a
 * configured listen address fails, so a relay that was down (or slow to grant a reservation) used to keep
 * the node from starting at all; now the relay listen is retried in the background.
 */
describe('holePunch relays: a relay that is down does not stop the node', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  const nodes = new LoopbackNodes(
    () => dir,
    () => [identify(), ping(), noise(), yamux(), tcp()],
  )

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-hp-relays-'))
  })
  afterEach(async () => {
    await nodes.closeAll()
    await cleanup()
  })

  it('starts while its relay is down, then reserves on it once it is back (same identity and port)', async () => {
    const port = await freePort()
    const listen = [`/ip4/127.0.0.1/tcp/${port}`]
    let relay = await nodes.start('relay', { listen, plugins: [relayServer()] })
    const relayAddress = relay.address
    await relay.close()

    const startedAt = Date.now()
    // a config with its own `listen` lists the relay's circuit address itself (see docs/config.md)
    const node = await nodes.start('node', {
      listen: ['/ip4/127.0.0.1/tcp/0', `${relayAddress}/p2p-circuit`],
      plugins: [holePunch({ relays: [relayAddress] })],
    })
    expect(Date.now() - startedAt, 'started without waiting for the relay').to.be.lessThan(10_000)
    expect(node.node.state).to.equal('started')
    const unreachable = node.events.filter((e) => e.event === 'hole-punch:relay-unreachable')
    expect(unreachable.length).to.be.greaterThan(0)
    expect(unreachable[0]).to.include({ address: `${relayAddress}/p2p-circuit`, attempt: 0 })
    expect(node.logs.join('\n')).to.match(/could not listen on .*p2p-circuit yet .*retrying in \d+ ms/)
    const circuits = () =>
      node.node.libp2p
        .getMultiaddrs()
        .map(String)
        .filter((a) => a.includes('/p2p-circuit'))
    expect(circuits()).to.deep.equal([])

    relay = await nodes.start('relay', { listen, plugins: [relayServer()] })
    expect(relay.address).to.equal(relayAddress)
    await waitFor(() => circuits().some((a) => a.startsWith(`${relayAddress}/p2p-circuit`)), {
      timeoutMs: 20_000,
      what: "a circuit address on the relay once it is back (the listen's retry)",
    })
  })
})
