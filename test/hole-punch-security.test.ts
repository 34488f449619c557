/**
 * holePunch() and stunServer() against hostile peers (security issue 10): `/mesh/nat-type` addresses
 * that name someone else (connection reversal as an SSRF / port scan), and the STUN server as a
 * reflector (rate limits, strict parsing, bounded answers) that plain STUN clients can still use.
 * Loopback only.
 */
import { randomBytes } from 'node:crypto'
import { createSocket, type Socket } from 'node:dgram'
import { createServer, type Server } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { holePunch, identify, noise, ping, stunServer, tcp, yamux } from 'meshkit/plugins'
import stun from 'stun'
import {
  encodeBindingRequest,
  encodeNatType,
  NAT_TYPE_PROTOCOL,
  parseBindingResponse,
  type StunServerApi,
  verifyAttestation,
} from '../plugins/hole-punch/index.js'
import { StunServer } from '../plugins/hole-punch/stun-server.js'
import { relayClient } from '../plugins/relay-client/index.js'
import { relayServer } from '../plugins/relay-server/index.js'
import { LoopbackNodes, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

/** A TCP listener on `ip` that counts the connections it gets. */
async function countingListener(ip: string): Promise<{ server: Server; port: number; count: () => number }> {
  let n = 0
  const server = createServer((s) => {
    n++
    s.destroy()
  })
  await new Promise<void>((resolve) => server.listen(0, ip, resolve))
  return { server, port: (server.address() as { port: number }).port, count: () => n }
}

async function udpSocket(ip = '127.0.0.1'): Promise<Socket> {
  const s = createSocket('udp4')
  await new Promise<void>((resolve) => s.bind(0, ip, () => resolve()))
  return s
}

/** Sends `datagrams` from `s` to `port` and collects what comes back within `waitMs`. */
async function exchange(s: Socket, port: number, datagrams: Uint8Array[], waitMs = 300): Promise<Buffer[]> {
  const got: Buffer[] = []
  const on = (b: Buffer) => got.push(b)
  s.on('message', on)
  for (const d of datagrams) s.send(d, port, '127.0.0.1')
  await new Promise((r) => setTimeout(r, waitMs))
  s.off('message', on)
  return got
}

describe('hole-punch against hostile peers', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  const nodes = new LoopbackNodes(
    () => dir,
    () => [identify(), ping(), noise(), yamux(), tcp()],
  )
  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-hp-sec-'))
  })
  afterEach(async () => {
    await nodes.closeAll()
    await cleanup()
  })

  describe('/mesh/nat-type addresses (connection reversal)', () => {
    let victims: Array<Awaited<ReturnType<typeof countingListener>>> = []
    afterEach(async () => {
      for (const v of victims) await new Promise((r) => v.server.close(r))
      victims = []
    })

    it('a nat-type message naming a loopback listener causes 0 connections to it; an allowed address is dialled once per peerDialInterval', async () => {
      // the honest mesh is on 127.0.1.0/24, made public; the node is in the default 'public' scope
      const relay = await nodes.start('relay', { listen: ['/ip4/127.0.1.1/tcp/0'], plugins: [relayServer()] })
      const node = await nodes.start('node', {
        listen: ['/ip4/127.0.1.2/tcp/0', '/webrtc', `${relay.address}/p2p-circuit`],
        network: { addressScope: 'public', publicCidrs: ['127.0.1.0/24'] },
        plugins: [holePunch({ relays: [relay.address] })],
      })
      await waitFor(
        () => node.node.libp2p.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit')),
        {
          what: 'a reservation',
        },
      )
      const victim = await countingListener('127.0.0.1')
      const inScope = await countingListener('127.0.1.50')
      victims.push(victim, inScope)
      // the attacker reaches the node through the relay (a relayed connection: reversal territory)
      const attacker = await nodes.start('attacker', {
        listen: ['/ip4/127.0.1.3/tcp/0'],
        plugins: [relayClient({ relays: [], minReservations: 0 })],
      })
      const conn = await attacker.node.libp2p.dial(
        multiaddr(`${relay.address}/p2p-circuit/p2p/${node.peerId}`),
        {
          signal: AbortSignal.timeout(10_000),
        },
      )
      expect(conn.limits, 'relayed').to.not.equal(undefined)
      /** "I am public at `addrs`": the node (NATed, it says unknown) dials back. */
      const claim = async (addrs: string[]) => {
        const s = await conn.newStream(NAT_TYPE_PROTOCOL, {
          runOnLimitedConnection: true,
          signal: AbortSignal.timeout(5000),
        })
        s.send(encodeNatType({ v: 1, udp: 'public', tcp: 'public', addrs }))
        for await (const _ of s) break
        s.abort(new Error('done'))
      }
      await claim([
        `/ip4/127.0.0.1/tcp/${victim.port}`,
        '/ip4/169.254.169.254/tcp/80',
        '/ip4/10.0.0.1/tcp/22',
      ])
      await new Promise((r) => setTimeout(r, 1500))
      expect(victim.count(), 'connections to the loopback victim').to.equal(0)
      // an address in scope is dialled (the reversal works), but only once per security.peerDialInterval
      for (let i = 0; i < 3; i++) await claim([`/ip4/127.0.1.50/tcp/${inScope.port}`])
      await waitFor(() => inScope.count() > 0, { what: 'the reversal dial' })
      await new Promise((r) => setTimeout(r, 1000))
      expect(inScope.count(), 'dials on one peer’s word within the interval').to.equal(1)
      expect(victim.count()).to.equal(0)
    })
  })

  describe('stunServer()', () => {
    let server: TestNode
    let port: number
    const stats = () => server.node.api<StunServerApi>('stun-server').stats()!
    beforeEach(async () => {
      server = await nodes.start('stun', {
        plugins: [stunServer({ host: '127.0.0.1', port: 0, perIpRate: 10, perIpBurst: 20, globalRate: 100 })],
      })
      port = server.node.api<StunServerApi>('stun-server').address()!.port
    })

    it('answers a plain STUN client (the stun package, as ICE would ask) as before', async () => {
      const s = await udpSocket()
      try {
        const request = stun.createMessage(stun.constants.STUN_BINDING_REQUEST)
        const [answer] = await exchange(s, port, [request.toBuffer()])
        const decoded = stun.decode(answer)
        expect(Buffer.compare(decoded.transactionId, request.transactionId)).to.equal(0)
        expect(decoded.getXorAddress()).to.deep.include({ address: '127.0.0.1', port: s.address().port })
        // header + XOR-MAPPED-ADDRESS, nothing else
        expect(answer.length).to.equal(32)
      } finally {
        s.close()
      }
    })

    it("attests the address it saw, for the request's transaction id (a nonce), signed by its key; never a larger answer", async () => {
      const s = await udpSocket('127.0.0.73')
      try {
        const nonce = randomBytes(12)
        const request = encodeBindingRequest(nonce, true)
        const [answer] = await exchange(s, port, [request])
        expect(answer.length).to.be.at.most(request.length)
        const parsed = parseBindingResponse(answer)!
        expect(parsed.mapped).to.deep.equal({ ip: '127.0.0.73', port: s.address().port })
        const attested = await verifyAttestation(parsed.attestation!, nonce)
        expect(attested).to.include({ signer: server.peerId, ip: '127.0.0.73', port: s.address().port })
        expect(Math.abs((attested as { time: number }).time - Date.now())).to.be.below(5000)
        // for another nonce, the same attestation does not verify
        expect(await verifyAttestation(parsed.attestation!, randomBytes(12))).to.have.property('error')
        // a request too small for the attestation gets the plain answer (never more bytes out than in)
        const small = Buffer.alloc(24)
        Buffer.from(encodeBindingRequest(randomBytes(12))).copy(small)
        small.writeUInt16BE(4, 2)
        small.writeUInt16BE(0xc3a0, 20) // ATTEST_REQUEST, no padding
        const [plain] = await exchange(s, port, [small])
        expect(plain.length).to.equal(32)
        expect(stats().attested).to.equal(1)
      } finally {
        s.close()
      }
    })

    it('drops malformed datagrams unanswered', async () => {
      const s = await udpSocket('127.0.0.74')
      try {
        const good = encodeBindingRequest(randomBytes(12))
        const lying = Buffer.from(good)
        lying.writeUInt16BE(0xfffc, 2)
        const noCookie = Buffer.from(good)
        noCookie.writeUInt32BE(0, 4)
        const response = Buffer.from(good)
        response.writeUInt16BE(0x0101, 0)
        // 60 attributes of 8 bytes (more than any binding request carries)
        const attrs = Buffer.concat(
          Array.from({ length: 60 }, () => Buffer.from([0x00, 0x2f, 0x00, 0x04, 1, 2, 3, 4])),
        )
        const many = Buffer.concat([good, attrs])
        many.writeUInt16BE(attrs.length, 2)
        const bad = [
          good.subarray(0, 7),
          lying,
          noCookie,
          response,
          many,
          Buffer.alloc(600),
          randomBytes(200),
          Buffer.from('not stun at all'),
        ]
        expect(await exchange(s, port, bad)).to.deep.equal([])
        expect(stats().malformed).to.equal(bad.length)
        expect(stats().answered).to.equal(0)
      } finally {
        s.close()
      }
    })

    it('rate-limits per source IP (one flood does not silence others) and in total', async () => {
      const flooder = await udpSocket('127.0.0.75')
      const other = await udpSocket('127.0.0.76')
      try {
        const flood = Array.from({ length: 200 }, () => encodeBindingRequest(randomBytes(12)))
        const answers = await exchange(flooder, port, flood, 400)
        // the burst (20) and what refills while the flood arrives
        expect(answers.length).to.be.within(15, 26)
        const bytesIn = flood.reduce((n, d) => n + d.length, 0)
        const bytesOut = answers.reduce((n, d) => n + d.length, 0)
        expect(bytesOut / bytesIn, 'bytes out per byte in').to.be.below(0.25)
        expect(await exchange(other, port, [encodeBindingRequest(randomBytes(12))])).to.have.length(1)
        // in total: 100/s, burst 200; 12 more sources of 20 each (240) cannot all be answered at once
        const sockets = await Promise.all(
          Array.from({ length: 12 }, (_, i) => udpSocket(`127.0.0.${80 + i}`)),
        )
        try {
          const got = await Promise.all(
            sockets.map((x) =>
              exchange(
                x,
                port,
                Array.from({ length: 20 }, () => encodeBindingRequest(randomBytes(12))),
              ),
            ),
          )
          const total = got.reduce((n, g) => n + g.length, 0)
          expect(total).to.be.below(240)
          expect(total).to.be.at.least(150)
        } finally {
          for (const x of sockets) x.close()
        }
        expect(stats().limited).to.be.greaterThan(170)
      } finally {
        flooder.close()
        other.close()
      }
    })

    it('a socket error is logged, not thrown', async () => {
      const s = await StunServer.start({
        host: '127.0.0.1',
        port: 0,
        perIpRate: 1,
        perIpBurst: 1,
        globalRate: 1,
        log: () => {},
      })
      try {
        expect(s.socket.listenerCount('error')).to.be.greaterThan(0)
        expect(() => s.socket.emit('error', new Error('EPERM: a send failed'))).to.not.throw()
      } finally {
        await s.close()
      }
    })
  })
})
