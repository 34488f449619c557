import { createSocket, type Socket } from 'node:dgram'
import type { Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { definePlugin, type NatType } from 'meshkit'
import { holePunch, identify, noise, stunServer, tcp, yamux } from 'meshkit/plugins'
import {
  BirthdayBudget,
  ConeSide,
  isGuessTarget,
  lineReader,
  newBirthdayToken,
  RandomSide,
} from '../plugins/hole-punch/birthday.js'
import {
  BIRTHDAY_PROTOCOL,
  birthdayRole,
  encodeBirthdayMessage,
  encodeNatType,
  MAX_BIRTHDAY_LINE_BYTES,
  NAT_TYPE_PROTOCOL,
  parseBirthdayMessage,
  type StunServerApi,
} from '../plugins/hole-punch/index.js'
import { LoopbackNodes, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir } from './helpers.js'

/**
 * Birthday-paradox punching (port-restricted cone + symmetric): the wire format, the UDP mechanics on
 * loopback (with the guesses aimed at sockets this test holds, so nothing else on the host gets a
 * packet), and `/mesh/birthday/1.0.0` against bad input. The punch through real NATs is in the NAT lab
 * matrix (test/natlab/hole-punch.test.ts).
 */
describe('hole-punch: birthday-paradox punching', function () {
  this.timeout(60_000)

  describe('wire', () => {
    const token = newBirthdayToken()
    it('round-trips every message', () => {
      for (const m of [
        { v: 1, t: 'cone', mapped: '203.0.113.10:40000', token, guesses: 4000 },
        { v: 1, t: 'random', ip: '198.51.100.7' },
        { v: 1, t: 'hit' },
        { v: 1, t: 'miss', reason: 'no guess got in' },
        { v: 1, t: 'pinned' },
      ] as const) {
        const line = new TextDecoder().decode(encodeBirthdayMessage(m))
        expect(line.endsWith('\n')).to.equal(true)
        expect(parseBirthdayMessage(line.trim())).to.deep.equal(m)
      }
    })

    it('rejects anything else', () => {
      for (const bad of [
        undefined,
        '',
        'not json',
        '[]',
        '{"v":2,"t":"hit"}',
        '{"v":1,"t":"hit","extra":1}',
        '{"v":1,"t":"nope"}',
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"short","guesses":4000}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:0","token":"${token}","guesses":4000}`,
        `{"v":1,"t":"cone","mapped":"999.0.113.10:4000","token":"${token}","guesses":4000}`,
        `{"v":1,"t":"cone","mapped":"example.com:4000","token":"${token}","guesses":4000}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"${token}"}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"${token}","guesses":0}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"${token}","guesses":20001}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"${token}","guesses":1.5}`,
        // control characters would end up in logs
        '{"v":1,"t":"miss","reason":"a\\nb"}',
        '{"v":1,"t":"random","ip":"::1"}',
        `{"v":1,"t":"miss","reason":"${'x'.repeat(200)}"}`,
        `{"v":1,"t":"hit","pad":"${'x'.repeat(MAX_BIRTHDAY_LINE_BYTES)}"}`,
      ])
        expect(parseBirthdayMessage(bad), String(bad)).to.equal(undefined)
    })

    it('gives each side its role only for port-restricted cone + symmetric', () => {
      expect(birthdayRole('port-restricted-cone', 'symmetric')).to.equal('cone')
      expect(birthdayRole('symmetric', 'port-restricted-cone')).to.equal('random')
      const others: NatType[] = ['public', 'full-cone', 'restricted-cone', 'unknown', 'symmetric']
      for (const t of others) expect(birthdayRole('symmetric', t), t).to.equal(undefined)
      expect(birthdayRole('port-restricted-cone', 'port-restricted-cone')).to.equal(undefined)
      expect(birthdayRole('port-restricted-cone', undefined)).to.equal(undefined)
    })
  })

  describe('on loopback', () => {
    let dir: string
    let cleanup: () => Promise<void>
    const nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), noise(), yamux(), tcp()],
    )
    let stun: TestNode
    let stunAt: string
    /** Silent sockets: the ports the cone side may guess besides the right one. */
    let decoys: Socket[] = []
    const received = new Map<number, number>()

    before(async () => {
      ;({ dir, cleanup } = await tempDir('meshkit-birthday-'))
      stun = await nodes.start('stun', { plugins: [stunServer({ host: '127.0.0.1', port: 0 })] })
      stunAt = `127.0.0.1:${stun.node.api<StunServerApi>('stun-server').address()!.port}`
      for (let i = 0; i < 20; i++) {
        const s = createSocket('udp4')
        await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
        s.on('message', () => received.set(s.address().port, (received.get(s.address().port) ?? 0) + 1))
        decoys.push(s)
      }
    })
    after(async () => {
      for (const s of decoys) s.close()
      decoys = []
      await nodes.closeAll()
      await cleanup()
    })

    /** The decoys' ports in random order, `extra` among them. */
    const candidates = (...extra: number[]) =>
      [...decoys.map((s) => s.address().port), ...extra].sort(() => Math.random() - 0.5)

    it('the cone side learns its mapped address; a guess that hits one of the random sockets is seen by both', async () => {
      const cone = await ConeSide.open(stunAt, 2000)
      const token = newBirthdayToken()
      const random = await RandomSide.open(cone.mapped, token, 32)
      try {
        // no NAT here: the STUN server saw the cone socket's own port
        expect(cone.mapped).to.equal(`127.0.0.1:${cone.port}`)
        const target = random.sockets[7].address().port
        const list = candidates(target)
        const hit = await cone.guess('127.0.0.1', token, {
          guesses: list.length,
          perTick: 4,
          stop: new Promise(() => {}),
          nextPort: () => list.shift() ?? target,
        })
        expect(hit).to.equal(`127.0.0.1:${target}`)
        expect(await random.waitHit(2000)).to.equal(target)
      } finally {
        await cone.close()
        await random.close()
      }
    })

    it('no hit: both sides say so, and a packet with another token does not count', async () => {
      const cone = await ConeSide.open(stunAt, 2000)
      const random = await RandomSide.open(cone.mapped, newBirthdayToken(), 16)
      try {
        received.clear()
        // the right port, but the wrong token
        const wrong = newBirthdayToken()
        const list = candidates(random.sockets[3].address().port)
        const hit = await cone.guess('127.0.0.1', wrong, {
          guesses: list.length,
          stop: new Promise(() => {}),
          nextPort: () => list.shift() ?? 9,
        })
        expect(hit).to.equal(undefined)
        expect(await random.waitHit(300)).to.equal(undefined)
        // every decoy got exactly one guess
        expect([...received.values()]).to.have.length(decoys.length)
        expect([...received.values()].every((n) => n === 1)).to.equal(true)
      } finally {
        await cone.close()
        await random.close()
      }
    })

    it('stops guessing as soon as `stop` settles', async () => {
      const cone = await ConeSide.open(stunAt, 2000)
      try {
        received.clear()
        const list = candidates()
        const t0 = Date.now()
        const hit = await cone.guess('127.0.0.1', newBirthdayToken(), {
          guesses: 1000,
          perTick: 1,
          stop: Promise.resolve(),
          nextPort: () => list.shift() ?? 9,
        })
        expect(hit).to.equal(undefined)
        expect(Date.now() - t0).to.be.below(500)
        expect([...received.values()].reduce((a, b) => a + b, 0)).to.be.at.most(2)
      } finally {
        await cone.close()
      }
    })

    it('reads successive lines from a stream, bounded, and gives up on an oversized one', async () => {
      const chunks = [
        new TextEncoder().encode('{"v":1,"t":"hit"}\n{"v":1,'),
        new TextEncoder().encode('"t":"pinned"}\n'),
        new TextEncoder().encode('x'.repeat(MAX_BIRTHDAY_LINE_BYTES + 5)),
      ]
      const stream = {
        async *[Symbol.asyncIterator]() {
          for (const c of chunks) yield c
          await new Promise(() => {})
        },
      } as unknown as Stream
      const read = lineReader(stream)
      expect(await read(500)).to.equal('{"v":1,"t":"hit"}')
      expect(await read(500)).to.equal('{"v":1,"t":"pinned"}')
      expect(await read(200)).to.equal(undefined)
    })

    /** A node whose 'nat-classification' says `type` (UDP and TCP). */
    const fixedNat = (type: NatType) =>
      definePlugin({
        name: 'fixed-nat',
        provides: ['nat-classification'],
        create: () => ({
          setup: () => ({ report: () => ({ udp: { type }, tcp: { type } }) }),
        }),
      })()

    async function open(client: TestNode, server: TestNode, protocol: string): Promise<Stream> {
      const conn = await client.node.libp2p.dial(multiaddr(server.address), {
        signal: AbortSignal.timeout(5000),
      })
      return conn.newStream(protocol, { signal: AbortSignal.timeout(5000) })
    }

    it('/mesh/birthday/1.0.0: refuses a pair that does not need it, resets bad input, budgets attempts, stays usable', async () => {
      const server = await nodes.start('prc', {
        plugins: [
          fixedNat('port-restricted-cone'),
          holePunch({ classifier: true, stunServers: [`stun:${stunAt}`], exchangeTimeout: 1500 }),
        ],
      })
      let n = 0
      /** A new client that told the server it is behind `nat` (no NAT type told: undefined). */
      const client = async (nat?: NatType) => {
        const c = await nodes.start(`client-${n++}`, { plugins: [] })
        if (nat) {
          const s = await open(c, server, NAT_TYPE_PROTOCOL)
          s.send(encodeNatType({ v: 1, udp: nat, tcp: nat }))
          await lineReader(s)(3000)
          s.abort(new Error('done'))
        }
        return c
      }
      const first = async (c: TestNode) => {
        const s = await open(c, server, BIRTHDAY_PROTOCOL)
        const read = lineReader(s)
        return { s, read, message: parseBirthdayMessage(await read(3000)) }
      }
      // no NAT type told, or one that a plain punch opens: not a birthday pair
      for (const nat of [undefined, 'full-cone'] as const) {
        const { s, message } = await first(await client(nat))
        expect(message, String(nat)).to.deep.include({ t: 'miss' })
        expect((message as { reason: string }).reason).to.match(/^not for port-restricted-cone \+ /)
        s.abort(new Error('done'))
      }
      // a symmetric client: the server (cone) opens its socket and sends its mapped address; bad input ends
      // the attempt (the stream ends without another line)
      const bad = [
        'garbage\n',
        `${'x'.repeat(MAX_BIRTHDAY_LINE_BYTES + 1)}\n`,
        '{"v":1,"t":"pinned"}\n',
        // a peer must not aim the guesses at this host
        '{"v":1,"t":"random","ip":"127.0.0.1"}\n',
      ]
      for (const line of bad) {
        const { s, read, message } = await first(await client('symmetric'))
        expect(message, line).to.deep.include({ t: 'cone' })
        // no NAT on loopback: the STUN server saw the socket itself
        expect((message as { mapped: string }).mapped).to.match(/^127\.0\.0\.1:\d+$/)
        s.send(new TextEncoder().encode(line))
        const t0 = Date.now()
        const after = parseBirthdayMessage(await read(3000))
        if (line.includes('127.0.0.1'))
          expect(after, line).to.deep.include({ t: 'miss', reason: 'will not send to 127.0.0.1' })
        else expect(after, line).to.equal(undefined)
        // at once, not after a timeout
        expect(Date.now() - t0, line).to.be.below(1000)
        s.abort(new Error('done'))
      }
      // silence: the attempt ends after the step timeout; the same peer is then over its budget, another is served
      const quiet = await client('symmetric')
      let r = await first(quiet)
      expect(r.message).to.deep.include({ t: 'cone' })
      // (the cone waits 2 x exchangeTimeout for the random side, which opens sockets and asks STUN first)
      await new Promise((resolve) => setTimeout(resolve, 3300))
      r.s.abort(new Error('done'))
      r = await first(quiet)
      expect(r.message).to.deep.include({ t: 'miss' })
      expect((r.message as { reason: string }).reason).to.match(/budget/)
      r.s.abort(new Error('done'))
      r = await first(await client('symmetric'))
      expect(r.message).to.deep.include({ t: 'cone' })
      r.s.abort(new Error('done'))
      expect(server.node.libp2p.status).to.equal('started')
    })

    it('/mesh/birthday/1.0.0, symmetric side: opens no socket for a cone address on this host', async () => {
      const server = await nodes.start('sym', {
        plugins: [fixedNat('symmetric'), holePunch({ classifier: true, stunServers: [`stun:${stunAt}`] })],
      })
      const c = await nodes.start('cone-liar', { plugins: [] })
      let s = await open(c, server, NAT_TYPE_PROTOCOL)
      s.send(encodeNatType({ v: 1, udp: 'port-restricted-cone', tcp: 'port-restricted-cone' }))
      await lineReader(s)(3000)
      s.abort(new Error('done'))
      // a "cone" that names a local service: the server must not spray it from 256 sockets
      const victim = createSocket('udp4')
      await new Promise<void>((r) => victim.bind(0, '127.0.0.1', () => r()))
      let got = 0
      victim.on('message', () => got++)
      try {
        s = await open(c, server, BIRTHDAY_PROTOCOL)
        s.send(
          encodeBirthdayMessage({
            v: 1,
            t: 'cone',
            mapped: `127.0.0.1:${victim.address().port}`,
            token: newBirthdayToken(),
            guesses: 4000,
          }),
        )
        expect(parseBirthdayMessage(await lineReader(s)(3000))).to.deep.equal({
          v: 1,
          t: 'miss',
          reason: 'will not send to 127.0.0.1',
        })
        s.abort(new Error('done'))
        await new Promise((r) => setTimeout(r, 600))
        expect(got).to.equal(0)
      } finally {
        victim.close()
      }
    })

    it('budget: 10 attempts a minute in all, one per peer per 30 s; guesses never aimed at this host', () => {
      const budget = new BirthdayBudget()
      const t = 1_000_000
      expect(budget.take('a', t)).to.equal(true)
      expect(budget.take('a', t + 29_000)).to.equal(false)
      expect(budget.take('a', t + 30_000)).to.equal(true)
      for (let i = 0; i < 8; i++) expect(budget.take(`p${i}`, t + 31_000)).to.equal(true)
      expect(budget.take('p9', t + 31_000)).to.equal(false)
      // the first one is a minute old
      expect(budget.take('p9', t + 60_000)).to.equal(true)
      for (const ip of ['198.51.100.7', '10.0.0.1', '100.64.0.1'])
        expect(isGuessTarget(ip), ip).to.equal(true)
      for (const ip of ['127.0.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '240.0.0.1', 'x'])
        expect(isGuessTarget(ip), ip).to.equal(false)
    })
  })
})
