/**
 * The NAT probe server against hostile peers (security issue 10): TCP callback floods from many
 * addresses (each callback is up to 4 connections back), and `/mesh/nat-probe/1.0.0` budgets and
 * penalties. Loopback only; hostile sources are 127.0.0.100-127.0.0.129.
 */
import { connect } from 'node:net'
import { expect } from 'chai'
import { identify, natProbeServer, noise, tcp, yamux } from 'meshkit/plugins'
import { ProbeServer } from '../plugins/nat-probe/index.js'
import { NAT_PROBE_PROTOCOL } from '../plugins/nat-probe/wire.js'
import { LoopbackNodes } from './fixtures/loopback-nodes.js'
import { tempDir } from './helpers.js'
import { HostilePool } from './hostile/hostile-node.js'

const IPS = Array.from({ length: 30 }, (_, i) => `127.0.0.${100 + i}`)

/** A free port pair for the probe (UDP and TCP), below the ephemeral range. */
const ports = (): [number, number] => {
  const base = 20_000 + 2 * Math.floor(Math.random() * 6000)
  return [base, base + 1]
}

/** One TCP callback request from `ip`: the server's answer line (`callback-ok` or an error). */
function askCallback(ip: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: ip })
    let got = ''
    socket.on('connect', () =>
      socket.write(
        `${JSON.stringify({ v: 1, t: 'callback', id: `c${Math.random()}`.slice(0, 20), via: 'other-port' })}\n`,
      ),
    )
    socket.on('data', (d) => {
      got += d.toString('utf8')
    })
    socket.on('error', () => {})
    socket.on('close', () => resolve(got))
    socket.setTimeout(3000, () => socket.destroy())
  })
}

describe('nat-probe against hostile peers', function () {
  this.timeout(60_000)

  it('TCP callbacks from 30 addresses of one /24: bounded per address, per /24 and in progress', async () => {
    let server: ProbeServer | undefined
    let udpPorts: [number, number] = ports()
    for (let attempt = 0; !server; attempt++) {
      udpPorts = ports()
      server = await ProbeServer.start({ addresses: ['127.0.0.1'], udpPorts, tcpPorts: udpPorts }).catch(
        (err) => {
          if (attempt >= 4) throw err
          return undefined
        },
      )
    }
    try {
      // three requests from each of 30 addresses, all at once (the requesters hang up: callbacks fail)
      const answers = await Promise.all(
        IPS.flatMap((ip) => [0, 1, 2].map(() => askCallback(ip, udpPorts[0]))),
      )
      const accepted = answers.filter((a) => a.includes('callback-ok')).length
      const refused = answers.filter((a) => /"t":"error"/.test(a)).length
      expect(accepted + refused).to.equal(90)
      // the bursts of the /24 and of all sources (32 each); the old limits took 84 of these (8 per
      // address, 64 in all and what refilled meanwhile)
      expect(accepted, `accepted ${accepted} of 90`).to.be.at.most(33)
      expect(server.stats.callbacksRefused).to.equal(refused)
      // one more from the same /24 is refused; the server still answers probes
      expect(await askCallback(IPS[0], udpPorts[0])).to.match(/"reason":"(rate|busy)"/)
      // the callbacks in progress end within their 4 attempts (1.8 s + connect timeout)
      await new Promise((r) => setTimeout(r, 3200))
      expect(await askCallback('127.0.0.1', udpPorts[0])).to.include('callback-ok')
    } finally {
      await server.close()
    }
  })

  it('/mesh/nat-probe/1.0.0: malformed requests and relay requests from non-partners are penalized; requests are budgeted', async () => {
    const { dir, cleanup } = await tempDir('meshkit-np-sec-')
    const nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), noise(), yamux(), tcp()],
    )
    const pool = new HostilePool(IPS)
    try {
      const server = await nodes.start('probe', {
        plugins: [natProbeServer({ udpPorts: ports(), addresses: ['127.0.0.1'] })],
      })
      const h = await pool.spawn()
      const connection = await h.dial(server.address)
      const ask = async (line: string) => {
        const { stream, reader } = await h.open(connection, NAT_PROBE_PROTOCOL)
        if (stream.status !== 'open') return { answer: '', end: 'refused' }
        try {
          stream.send(new TextEncoder().encode(line))
        } catch {
          return { answer: '', end: 'refused' }
        }
        const r = await reader.read({ timeoutMs: 3000 })
        stream.abort(new Error('done'))
        return { answer: new TextDecoder().decode(r.bytes), end: r.end }
      }
      const relay = await ask(
        `${JSON.stringify({ v: 1, t: 'relay', proto: 'tcp', to: '127.0.0.1:9', id: 'x' })}\n`,
      )
      expect(relay.answer).to.include('not a partner')
      expect(server.node.reputation.penalty(h.peerId)).to.be.at.least(9)
      const garbage = await ask('{"v":1,"t":"nonsense"}\n')
      expect(garbage.answer).to.equal('')
      expect(server.node.reputation.penalty(h.peerId)).to.be.at.least(34)
      // a burst of endpoint requests from another peer: the per-peer budget (20) refuses the rest
      const other = await pool.spawn()
      const c2 = await other.dial(server.address)
      let answered = 0
      for (let i = 0; i < 30; i++) {
        const { stream, reader } = await other.open(c2, NAT_PROBE_PROTOCOL)
        if (stream.status !== 'open') continue
        try {
          stream.send(new TextEncoder().encode('{"v":1,"t":"endpoints"}\n'))
        } catch {
          continue
        }
        const r = await reader.read({ timeoutMs: 2000 })
        stream.abort(new Error('done'))
        if (new TextDecoder().decode(r.bytes).includes('udp')) answered++
      }
      expect(answered).to.be.within(20, 22)
      expect(server.node.reputation.penalty(other.peerId)).to.be.greaterThan(0)
    } finally {
      await pool.stopAll()
      await nodes.closeAll()
      await cleanup()
    }
  })
})
