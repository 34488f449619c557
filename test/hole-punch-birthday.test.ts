import { randomBytes } from 'node:crypto'
import { createSocket, type Socket } from 'node:dgram'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import type { NatType } from 'meshkit'
import { definePlugin } from 'meshkit/plugin'
import { holePunch, identify, noise, stunServer, tcp, yamux } from 'meshkit/plugins'
import {
  BirthdayBudget,
  ConeSide,
  isGuessTarget,
  lineReader,
  newBirthdayToken,
  RandomSide,
  stunMapped,
} from '../plugins/hole-punch/birthday.js'
import {
  BIRTHDAY_PROTOCOL,
  birthdayRole,
  createAttestation,
  encodeBirthdayMessage,
  encodeNatType,
  MAX_BIRTHDAY_LINE_BYTES,
  NAT_TYPE_PROTOCOL,
  parseBirthdayMessage,
  type StunServerApi,
  verifyAttestation,
} from '../plugins/hole-punch/index.js'
import { LoopbackNodes, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir } from './helpers.js'
import { HostilePool } from './hostile/hostile-node.js'

/**
 * Birthday-paradox punching (port-restricted cone + symmetric): the wire format, the UDP mechanics on
 * loopback (with the guesses aimed at sockets this test holds, so nothing else on the host gets a
 * packet), and `/mesh/birthday/1.0.0` against bad input and unproven addresses (security issue 10: a
 * peer naming a victim's address). The punch through real NATs is in the NAT lab matrix
 * (test/natlab/hole-punch.test.ts).
 */
describe('hole-punch: birthday-paradox punching', function () {
  this.timeout(60_000)

  describe('wire', () => {
    const token = newBirthdayToken()
    const proof = Buffer.alloc(118, 7).toString('base64')
    it('round-trips every message', () => {
      for (const m of [
        { v: 1, t: 'nonce', nonce: token },
        { v: 1, t: 'cone', mapped: '203.0.113.10:40000', token, proof },
        { v: 1, t: 'random', ip: '198.51.100.7', proof },
        { v: 1, t: 'hit' },
        { v: 1, t: 'miss', reason: 'no guess got in' },
        { v: 1, t: 'pinned' },
      ] as const) {
        const line = new TextDecoder().decode(encodeBirthdayMessage(m))
        expect(line.endsWith('\n')).to.equal(true)
        expect(parseBirthdayMessage(line.trim())).to.deep.equal(m)
      }
    })

    it('rejects anything else (the old unproven cone line included)', () => {
      for (const bad of [
        undefined,
        '',
        'not json',
        '[]',
        '{"v":2,"t":"hit"}',
        '{"v":1,"t":"hit","extra":1}',
        '{"v":1,"t":"nope"}',
        '{"v":1,"t":"nonce","nonce":"short"}',
        // what the hostile harness sends: no proof, and a guess count the remote has no say in any more
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"${token}","guesses":20000}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"short","proof":"${proof}"}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:0","token":"${token}","proof":"${proof}"}`,
        `{"v":1,"t":"cone","mapped":"999.0.113.10:4000","token":"${token}","proof":"${proof}"}`,
        `{"v":1,"t":"cone","mapped":"example.com:4000","token":"${token}","proof":"${proof}"}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"${token}"}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"${token}","proof":"not base64!"}`,
        `{"v":1,"t":"cone","mapped":"203.0.113.10:40000","token":"${token}","proof":"${'A'.repeat(400)}"}`,
        // control characters would end up in logs
        '{"v":1,"t":"miss","reason":"a\\nb"}',
        '{"v":1,"t":"random","ip":"198.51.100.7"}',
        `{"v":1,"t":"random","ip":"::1","proof":"${proof}"}`,
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
      expect(read.why).to.equal(undefined)
      expect(await read(500)).to.equal('{"v":1,"t":"pinned"}')
      expect(await read(200)).to.equal(undefined)
      expect(read.why).to.equal('oversized')
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

    /** What `node`'s reputation holds against `peer`. */
    const penaltyOf = (node: TestNode, peer: string) => node.node.reputation.penalty(peer)

    /** A birthday stream of `client` to `server`, with its line reader. */
    const birthday = async (client: TestNode, server: TestNode) => {
      const s = await open(client, server, BIRTHDAY_PROTOCOL)
      const read = lineReader(s)
      const next = async (ms = 3000) => parseBirthdayMessage(await read(ms))
      const send = (line: string | object) =>
        s.send(new TextEncoder().encode(typeof line === 'string' ? line : `${JSON.stringify(line)}\n`))
      return { s, read, next, send }
    }

    it('/mesh/birthday/1.0.0: refuses a pair that does not need it, ends on bad input (penalized), budgets attempts, stays usable', async () => {
      const server = await nodes.start('prc', {
        plugins: [
          fixedNat('port-restricted-cone'),
          holePunch({ classifier: true, stunServers: [`stun:${stunAt}`], exchangeTimeout: 1500 }),
        ],
      })
      // the STUN server is a peer the server is directly connected to at its configured STUN IP: trusted
      await server.node.libp2p.dial(multiaddr(stun.address), { signal: AbortSignal.timeout(5000) })
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
      // no NAT type told, or one that a plain punch opens: not a birthday pair
      for (const nat of [undefined, 'full-cone'] as const) {
        const c = await client(nat)
        const b = await birthday(c, server)
        const message = await b.next()
        expect(message, String(nat)).to.deep.include({ t: 'miss' })
        expect((message as { reason: string }).reason).to.match(/^not for port-restricted-cone \+ /)
        b.s.abort(new Error('done'))
      }
      // a symmetric client: the server (cone) sends its nonce first; a line that is no nonce ends the
      // attempt at once, and is the client's offence
      for (const line of [
        'garbage\n',
        `${'x'.repeat(MAX_BIRTHDAY_LINE_BYTES + 1)}\n`,
        '{"v":1,"t":"pinned"}\n',
      ]) {
        const c = await client('symmetric')
        const b = await birthday(c, server)
        expect(await b.next(), line).to.deep.include({ t: 'nonce' })
        b.send(line)
        const t0 = Date.now()
        expect(await b.next(), line).to.equal(undefined)
        expect(Date.now() - t0, line).to.be.below(1000)
        expect(penaltyOf(server, c.peerId), line).to.be.at.least(24)
        b.s.abort(new Error('done'))
      }
      // the cone side proves its address with the client's nonce: an attestation by the STUN server
      const c = await client('symmetric')
      let b = await birthday(c, server)
      const serverNonce = Buffer.from(((await b.next()) as { nonce: string }).nonce, 'hex')
      const nonce = randomBytes(12)
      b.send({ v: 1, t: 'nonce', nonce: nonce.toString('hex') })
      const cone = (await b.next()) as { t: string; mapped: string; proof: string }
      expect(cone.t).to.equal('cone')
      // no NAT on loopback: the STUN server saw the socket itself
      expect(cone.mapped).to.match(/^127\.0\.0\.1:\d+$/)
      const attested = await verifyAttestation(Buffer.from(cone.proof, 'base64'), nonce)
      expect(attested).to.include({
        signer: stun.peerId,
        ip: '127.0.0.1',
        port: Number(cone.mapped.split(':')[1]),
      })
      // ... and a proof for another nonce does not verify
      expect(await verifyAttestation(Buffer.from(cone.proof, 'base64'), randomBytes(12))).to.have.property(
        'error',
      )
      // a valid proof of this host's address (the same STUN server, the server's nonce): proven, but the
      // guesses are never aimed at this host
      const socket = createSocket('udp4')
      await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()))
      const seen = await stunMapped(socket, stunAt, 2000, serverNonce)
      socket.close()
      expect(seen?.attestation, 'an attestation').to.not.equal(undefined)
      b.send({
        v: 1,
        t: 'random',
        ip: '127.0.0.1',
        proof: Buffer.from(seen!.attestation!).toString('base64'),
      })
      expect(await b.next()).to.deep.equal({ v: 1, t: 'miss', reason: 'will not send to 127.0.0.1' })
      b.s.abort(new Error('done'))
      // the same peer again: over the birthday budget (one attempt per peer per 30 s)
      b = await birthday(c, server)
      const again = await b.next()
      expect(again).to.deep.include({ t: 'miss' })
      expect((again as { reason: string }).reason).to.match(/budget/)
      b.s.abort(new Error('done'))
      // silence: another peer is served, and the attempt ends after its step timeouts
      const quiet = await client('symmetric')
      b = await birthday(quiet, server)
      expect(await b.next()).to.deep.include({ t: 'nonce' })
      b.s.abort(new Error('done'))
      expect(penaltyOf(server, quiet.peerId)).to.equal(0)
      expect(server.node.libp2p.status).to.equal('started')
    })

    it('/mesh/birthday/1.0.0, symmetric side: a cone line naming an address the peer did not prove gets 0 datagrams there', async () => {
      const server = await nodes.start('sym', {
        plugins: [
          fixedNat('symmetric'),
          holePunch({ classifier: true, stunServers: [`stun:${stunAt}`], exchangeTimeout: 1000 }),
        ],
      })
      await server.node.libp2p.dial(multiaddr(stun.address), { signal: AbortSignal.timeout(5000) })
      // the victim: a UDP listener; the attackers come from other loopback addresses than the STUN server's
      const victim = createSocket('udp4')
      await new Promise<void>((r) => victim.bind(0, '127.0.0.1', () => r()))
      const victimAt = `127.0.0.1:${victim.address().port}`
      let got = 0
      victim.on('message', () => got++)
      const pool = new HostilePool(['127.0.0.61', '127.0.0.62', '127.0.0.63', '127.0.0.64'])
      const stunBefore = stun.node.api<StunServerApi>('stun-server').stats()!.answered
      let attackerStunRequests = 0
      /** A fresh attacker that claims port-restricted-cone, and its birthday stream. */
      const attacker = async () => {
        const node = await pool.spawn()
        const connection = await node.dial(server.address)
        const nt = await node.open(connection, NAT_TYPE_PROTOCOL)
        nt.stream.send(encodeNatType({ v: 1, udp: 'port-restricted-cone', tcp: 'port-restricted-cone' }))
        await nt.reader.read({ timeoutMs: 2000, maxBytes: 1024 })
        nt.stream.abort(new Error('done'))
        const { stream, reader } = await node.open(connection, BIRTHDAY_PROTOCOL)
        let used = 0
        /** The next line from the harness's reader (it takes the stream's data first). */
        const next = async () => {
          const deadline = Date.now() + 3000
          for (;;) {
            const buf = reader.bytes()
            const nl = buf.indexOf(0x0a, used)
            if (nl >= 0) {
              const line = new TextDecoder().decode(buf.subarray(used, nl))
              used = nl + 1
              return parseBirthdayMessage(line)
            }
            const r = await reader.read({ timeoutMs: deadline - Date.now(), maxBytes: reader.length + 1 })
            if (r.end !== 'max' && reader.bytes().indexOf(0x0a, used) < 0) return undefined
          }
        }
        const send = (m: object) => stream.send(new TextEncoder().encode(`${JSON.stringify(m)}\n`))
        return { node, stream, next, send }
      }
      try {
        // 1. the hostile harness's line, as it sends it: no nonce, no proof, 20,000 guesses
        let a = await attacker()
        a.send({ v: 1, t: 'cone', mapped: victimAt, token: newBirthdayToken(), guesses: 20_000 })
        expect(await a.next()).to.deep.include({ t: 'nonce' })
        expect(await a.next()).to.equal(undefined)
        expect(penaltyOf(server, a.node.peerId), 'malformed').to.be.at.least(24)
        // 2. a proof of the attacker's own address, passed off as the victim's
        a = await attacker()
        let serverNonce = Buffer.from(((await a.next()) as { nonce: string }).nonce, 'hex')
        a.send({ v: 1, t: 'nonce', nonce: randomBytes(12).toString('hex') })
        const own = createSocket('udp4')
        await new Promise<void>((r) => own.bind(0, '127.0.0.62', () => r()))
        // the attacker's own STUN requests, told apart from the node's below
        const send = own.send.bind(own)
        own.send = ((...args: Parameters<typeof own.send>) => {
          attackerStunRequests++
          return send(...args)
        }) as typeof own.send
        const seen = await stunMapped(own, stunAt, 2000, serverNonce)
        own.close()
        a.send({
          v: 1,
          t: 'cone',
          mapped: victimAt,
          token: newBirthdayToken(),
          proof: Buffer.from(seen!.attestation!).toString('base64'),
        })
        let answer = (await a.next()) as { t: string; reason: string }
        expect(answer.t).to.equal('miss')
        expect(answer.reason).to.match(/your proof was not accepted: it attests 127\.0\.0\.62:/)
        expect(penaltyOf(server, a.node.peerId), 'forged').to.be.at.least(49)
        // 3. a well-signed attestation of the victim's address, by a "STUN server" the node does not trust
        a = await attacker()
        serverNonce = Buffer.from(((await a.next()) as { nonce: string }).nonce, 'hex')
        a.send({ v: 1, t: 'nonce', nonce: randomBytes(12).toString('hex') })
        const ownKey = await generateKeyPair('Ed25519')
        const fake = await createAttestation(ownKey, serverNonce, '127.0.0.1', victim.address().port)
        a.send({
          v: 1,
          t: 'cone',
          mapped: victimAt,
          token: newBirthdayToken(),
          proof: Buffer.from(fake!).toString('base64'),
        })
        answer = (await a.next()) as { t: string; reason: string }
        expect(answer.t).to.equal('miss')
        expect(answer.reason).to.match(/not a STUN server this node trusts/)
        // 4. the same, for another nonce than the server's: a bad signature
        a = await attacker()
        await a.next()
        a.send({ v: 1, t: 'nonce', nonce: randomBytes(12).toString('hex') })
        const stale = await createAttestation(ownKey, randomBytes(12), '127.0.0.1', victim.address().port)
        a.send({
          v: 1,
          t: 'cone',
          mapped: victimAt,
          token: newBirthdayToken(),
          proof: Buffer.from(stale!).toString('base64'),
        })
        answer = (await a.next()) as { t: string; reason: string }
        expect(answer.reason).to.match(/bad attestation signature/)
        await new Promise((r) => setTimeout(r, 600))
        expect(got, 'datagrams at the victim').to.equal(0)
        // and nothing anywhere else on these four peers' word: not even a STUN request (the symmetric side
        // proves its own address only once the cone's proof holds)
        const stunAfter = stun.node.api<StunServerApi>('stun-server').stats()!.answered
        expect(stunAfter - stunBefore - attackerStunRequests, 'STUN requests the node sent').to.equal(0)
      } finally {
        victim.close()
        await pool.stopAll()
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
