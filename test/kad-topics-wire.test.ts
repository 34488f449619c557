/**
 * The member exchange (/mesh/topics/2.0.0 and 1.0.0) against bad bytes: decodeRequest/decodeResponse directly,
 * then raw streams from a plain js-libp2p node to a Meshkit node (bad requests), and a plain node that
 * answers a Meshkit node's exchanges with bad responses. Every time the stream is reset or closed,
 * nothing is learned, and the node keeps working.
 */
import { noise as plainNoise } from '@chainsafe/libp2p-noise'
import { yamux as plainYamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p, PrivateKey, Stream } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { tcp as plainTcp } from '@libp2p/tcp'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { createLibp2p } from 'libp2p'
import { TOPICS_PROTOCOL } from 'meshkit/plugins'
import { memberPayload, signMember } from '../plugins/kad-topics/member-record.js'
import { decodeRequest, decodeResponse, encode, LIMITS, WireError } from '../plugins/kad-topics/wire.js'
import {
  collectPeers,
  lengthPrefixed,
  type RawReply,
  rawExchange,
  type TopicNode,
  TopicTestMesh,
  varint,
} from './fixtures/topics.js'
import { waitFor } from './helpers.js'

const utf8 = (s: string) => new TextEncoder().encode(s)
const json = (value: unknown) => utf8(JSON.stringify(value))
const ADDR = '/ip4/127.0.0.1/tcp/4001'
const PEER = '12D3KooWQkKze92ES1hjLfoMygrgQ3hfaHoXpZJJQyawsiH95AFK'
const KEY = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
const SIG = 'A'.repeat(86)

function expectWireError(fn: () => unknown, pattern: RegExp): void {
  let error: unknown
  try {
    fn()
  } catch (err) {
    error = err
  }
  expect(error, `rejected with ${pattern}`).to.be.instanceOf(WireError)
  expect((error as Error).message).to.match(/^malformed topics message: /)
  expect((error as Error).message).to.match(pattern)
}

const plainNode = (privateKey?: PrivateKey) =>
  createLibp2p({
    ...(privateKey ? { privateKey } : {}),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [plainTcp()],
    connectionEncrypters: [plainNoise()],
    streamMuxers: [plainYamux()],
  })

describe('kad-topics wire format', () => {
  describe('decodeRequest', () => {
    it('accepts a valid request (addrs optional, unknown fields dropped)', () => {
      // compared field by field: the format may grow optional fields
      const request = { v: 1 as const, joined: [KEY], addrs: [ADDR] }
      expect(decodeRequest(encode(request))).to.deep.include(request)
      expect(decodeRequest(json({ v: 1, joined: [] }))).to.deep.include({ v: 1, joined: [], addrs: [] })
      const extra = decodeRequest(json({ v: 1, joined: [KEY], addrs: [], extra: { deep: [1] } }))
      expect(extra).to.deep.include({ v: 1, joined: [KEY], addrs: [] })
      expect(extra).not.to.have.property('extra')
      const max = Array.from({ length: LIMITS.maxJoined }, (_, i) => `k${i}`)
      expect(decodeRequest(json({ v: 1, joined: max })).joined).to.have.length(LIMITS.maxJoined)
    })

    it('rejects oversized, non-JSON, non-object and wrong-version messages', () => {
      const big = json({ v: 1, joined: [], pad: 'x'.repeat(LIMITS.maxMessageBytes) })
      expectWireError(() => decodeRequest(big), /bytes \(max 65536\)/)
      expectWireError(() => decodeRequest(utf8('{"v":1,')), /not UTF-8 JSON/)
      expectWireError(() => decodeRequest(Uint8Array.from([0xff, 0xfe, 0x7b, 0x7d])), /not UTF-8 JSON/)
      expectWireError(() => decodeRequest(new Uint8Array(0)), /not UTF-8 JSON/)
      for (const v of ['null', '[]', '42', '"v"', 'true'])
        expectWireError(() => decodeRequest(utf8(v)), /not an object/)
      for (const v of [3, 0, '1', null]) {
        expectWireError(() => decodeRequest(json({ v, joined: [] })), /unknown version/)
      }
      expectWireError(() => decodeRequest(json({ joined: [] })), /unknown version/)
      // the version must be the protocol's
      expectWireError(() => decodeRequest(json({ v: 1, joined: [] }), 2), /version 1 on a version 2/)
      expectWireError(
        () => decodeRequest(json({ v: 2, joined: [], ts: 1, sigs: [] }), 1),
        /version 2 on a version 1/,
      )
    })

    it('version 2: a time and one well-formed signature per joined key', () => {
      const ok = { v: 2, joined: [KEY], addrs: [ADDR], ts: 1_700_000_000_000, sigs: [SIG] }
      expect(decodeRequest(json(ok), 2)).to.deep.include(ok)
      expectWireError(() => decodeRequest(json({ ...ok, ts: undefined })), /ts is not a time/)
      for (const ts of [-1, 1.5, '1', 2 ** 60])
        expectWireError(() => decodeRequest(json({ ...ok, ts })), /ts is not a time/)
      expectWireError(() => decodeRequest(json({ ...ok, sigs: undefined })), /sigs is not an array/)
      expectWireError(() => decodeRequest(json({ ...ok, sigs: [] })), /0 sigs for 1 joined keys/)
      expectWireError(() => decodeRequest(json({ ...ok, sigs: [SIG, SIG] })), /2 sigs for 1 joined keys/)
      for (const bad of ['A'.repeat(85), `${'A'.repeat(85)}=`, `${'A'.repeat(85)}+`])
        expectWireError(() => decodeRequest(json({ ...ok, sigs: [bad] })), /bad signature/)
    })

    it('rejects bad joined lists and addresses', () => {
      const tooMany = Array.from({ length: LIMITS.maxJoined + 1 }, (_, i) => `k${i}`)
      expectWireError(() => decodeRequest(json({ v: 1, joined: tooMany })), /joined has 65 entries/)
      expectWireError(() => decodeRequest(json({ v: 1 })), /joined is not an array/)
      expectWireError(() => decodeRequest(json({ v: 1, joined: 'k' })), /joined is not an array/)
      expectWireError(() => decodeRequest(json({ v: 1, joined: { 0: 'k' } })), /joined is not an array/)
      for (const bad of ['', 'x'.repeat(LIMITS.maxStringLength + 1), 42, null, ['k']]) {
        expectWireError(() => decodeRequest(json({ v: 1, joined: [bad] })), /bad entry in joined/)
      }
      for (const bad of ['not-a-multiaddr', '/ip4/999.1.1.1/tcp/1', '/ip4/1.2.3.4/tcp/99999', '/nope/1']) {
        expectWireError(() => decodeRequest(json({ v: 1, joined: [], addrs: [bad] })), /bad multiaddr/)
      }
      const addrs = Array.from({ length: LIMITS.maxAddrs + 1 }, () => ADDR)
      expectWireError(() => decodeRequest(json({ v: 1, joined: [], addrs })), /addrs has 17 entries/)
      expectWireError(() => decodeRequest(json({ v: 1, joined: [], addrs: ADDR })), /addrs is not an array/)
    })
  })

  describe('decodeResponse', () => {
    const ok = { v: 1, joined: [KEY], addrs: [ADDR] }

    it('accepts a valid response', () => {
      const decoded = decodeResponse(json({ ...ok, members: { [KEY]: [{ id: PEER, addrs: [ADDR] }] } }))
      expect(decoded).to.deep.include(ok)
      expect(Object.keys(decoded.members)).to.deep.equal([KEY])
      expect(decoded.members[KEY].map(({ id, addrs }) => ({ id, addrs }))).to.deep.equal([
        { id: PEER, addrs: [ADDR] },
      ])
      expect(decodeResponse(json(ok))).to.deep.include({ ...ok, members: {} })
      const full = Array.from({ length: LIMITS.maxMembersPerTopic }, () => ({ id: PEER, addrs: [] }))
      expect(decodeResponse(json({ ...ok, members: { [KEY]: full } })).members[KEY]).to.have.length(32)
    })

    it('version 2: every member carries its time and signature', () => {
      const own = { v: 2, joined: [KEY], addrs: [ADDR], ts: 5, sigs: [SIG] }
      const member = { id: PEER, addrs: [ADDR], ts: 7, sig: SIG }
      const decoded = decodeResponse(json({ ...own, members: { [KEY]: [member] } }), 2)
      expect(decoded.members[KEY][0]).to.deep.include(member)
      const { sig: _sig, ...unsigned } = member
      expectWireError(
        () => decodeResponse(json({ ...own, members: { [KEY]: [unsigned] } })),
        /member sig is not a string/,
      )
      expectWireError(
        () => decodeResponse(json({ ...own, members: { [KEY]: [{ ...member, ts: 'now' }] } })),
        /member ts is not a time/,
      )
      expectWireError(
        () => decodeResponse(json({ ...own, members: { [KEY]: [{ ...member, sig: 'x' }] } })),
        /bad signature/,
      )
      // version 1 carries no signatures: extra fields are ignored
      const v1 = decodeResponse(json({ ...ok, members: { [KEY]: [{ ...member, sig: 'x' }] } }), 1)
      expect(v1.members[KEY][0]).not.to.have.property('sig')
    })

    it('rejects bad member lists', () => {
      const withMembers = (members: unknown) => json({ ...ok, members })
      for (const bad of [[], 'x', 3, true]) {
        expectWireError(() => decodeResponse(withMembers(bad)), /members is not an object/)
      }
      expect(decodeResponse(withMembers(null)).members, 'null: no members').to.deep.equal({})
      const manyKeys = Object.fromEntries(
        Array.from({ length: LIMITS.maxMemberTopics + 1 }, (_, i) => [`k${i}`, []]),
      )
      expectWireError(() => decodeResponse(withMembers(manyKeys)), /members has 65 keys/)
      expectWireError(
        () => decodeResponse(withMembers({ ['k'.repeat(LIMITS.maxStringLength + 1)]: [] })),
        /member key too long/,
      )
      expectWireError(() => decodeResponse(withMembers({ [KEY]: 'x' })), /bad member list/)
      const tooMany = Array.from({ length: LIMITS.maxMembersPerTopic + 1 }, () => ({ id: PEER, addrs: [] }))
      expectWireError(() => decodeResponse(withMembers({ [KEY]: tooMany })), /bad member list/)
      for (const bad of [null, 'x', 7]) {
        expectWireError(() => decodeResponse(withMembers({ [KEY]: [bad] })), /member is not an object/)
      }
      expectWireError(
        () => decodeResponse(withMembers({ [KEY]: [{ addrs: [] }] })),
        /member id is not a string/,
      )
      expectWireError(
        () => decodeResponse(withMembers({ [KEY]: [{ id: 42, addrs: [] }] })),
        /member id is not a string/,
      )
      for (const bad of ['not-a-peer-id', 'Qm', `${PEER}x`, '']) {
        expectWireError(() => decodeResponse(withMembers({ [KEY]: [{ id: bad, addrs: [] }] })), /bad peer id/)
      }
      expectWireError(
        () => decodeResponse(withMembers({ [KEY]: [{ id: PEER, addrs: ['/ip4/x'] }] })),
        /bad multiaddr/,
      )
      expectWireError(
        () => decodeResponse(withMembers({ [KEY]: [{ id: PEER }] })),
        /member addrs is not an array/,
      )
      // the outer fields are checked as in a request
      expectWireError(() => decodeResponse(json({ v: 1, members: {} })), /joined is not an array/)
      expectWireError(() => decodeResponse(json({ ...ok, v: 3 })), /unknown version/)
      expectWireError(() => decodeResponse(json(ok), 2), /version 1 on a version 2/)
      expectWireError(() => decodeResponse(json({ ...ok, addrs: ['nope'] })), /bad multiaddr/)
    })

    it('does not let a "__proto__" member key replace the prototype of the members object', () => {
      const bytes = utf8(`{"v":1,"joined":[],"members":{"__proto__":[{"id":"${PEER}","addrs":[]}],"k":[]}}`)
      const { members } = decodeResponse(bytes)
      expect(Object.getPrototypeOf(members)).to.equal(Object.prototype)
      expect((members as unknown as { length?: unknown }).length).to.equal(undefined)
      expect(members.k).to.deep.equal([])
    })
  })

  describe('bad requests from the network', function () {
    this.timeout(120_000)
    let mesh: TopicTestMesh
    let node: TopicNode
    let plain: Libp2p
    let plainKey: PrivateKey
    let slow: Libp2p
    let key: string

    before(async () => {
      mesh = await TopicTestMesh.create()
      // penalties are checked, not bans: the plain peer sends a dozen bad messages in a row
      node = await mesh.start({ topics: ['wire'], dial: [], config: { security: { banThreshold: 1e6 } } })
      key = (await node.api.topicKey('wire')).toString()
      plainKey = await generateKeyPair('Ed25519')
      plain = await plainNode(plainKey)
      slow = await plainNode()
    })
    after(async () => {
      await Promise.allSettled([plain?.stop(), slow?.stop()])
      await mesh?.stop()
    })

    const send = (message: Parameters<typeof rawExchange>[2]) =>
      rawExchange(plain, multiaddr(node.addr), message)
    const expectRejected = (reply: RawReply, what: string) => {
      expect(reply.ended, `${what}: the stream is reset`).to.equal('reset')
      expect(reply.json, `${what}: no answer`).to.equal(undefined)
    }

    it('resets the stream on each bad request, penalizes malformed ones, and keeps serving', async () => {
      // a peer that opens streams and sends nothing: held at most 10 s each, at most 2 at a time (the
      // exchange's per-peer concurrency; the rest refused at once), from another peer so that its
      // budget does not affect the cases below
      const silent: Array<Promise<RawReply>> = []
      const slowStreams: Stream[] = []
      for (let i = 0; i < 10; i++) {
        silent.push(
          (async () => {
            const stream = await slow
              .dialProtocol(multiaddr(node.addr), TOPICS_PROTOCOL)
              .catch((err: Error) => err)
            if (stream instanceof Error)
              return { ended: 'reset', bytes: new Uint8Array(0), error: stream } as RawReply
            slowStreams.push(stream)
            const chunks: Uint8Array[] = []
            try {
              for await (const c of stream) chunks.push(c.subarray())
              return { ended: 'closed', bytes: new Uint8Array(0) } as RawReply
            } catch (err) {
              return { ended: 'reset', bytes: new Uint8Array(0), error: err as Error } as RawReply
            }
          })(),
        )
      }
      const silentStarted = Date.now()

      // [what, message, penalized as malformed] (a stream that ends early may be the network's fault)
      const cases: Array<[string, Parameters<typeof rawExchange>[2], boolean]> = [
        [
          'a length prefix above 64 KiB',
          { raw: Uint8Array.from([...varint(LIMITS.maxMessageBytes + 1), 0x7b]) },
          true,
        ],
        ['a 2^40 length prefix', { raw: varint(2 ** 40) }, true],
        // (lpStream keeps reading a varint that never ends, until the stream does: an early end)
        ['an over-long varint', { raw: new Uint8Array(16).fill(0xff) }, false],
        ['a truncated message', { raw: Uint8Array.from([...varint(100), ...utf8('{"v":1')]) }, false],
        ['an empty stream', { raw: new Uint8Array(0) }, false],
        ['invalid JSON', { raw: lengthPrefixed(utf8('{"v":1,"joined":[')) }, true],
        ['invalid UTF-8', { raw: lengthPrefixed(Uint8Array.from([0xc3, 0x28, 0xff])) }, true],
        ['a JSON array', { raw: lengthPrefixed(utf8('[1,2,3]')) }, true],
        ['version 3', { v: 3, joined: [key], addrs: [] }, true],
        ['no version', { joined: [key], addrs: [] }, true],
        ['version 2 without signatures', { v: 2, joined: [key], addrs: [] }, true],
        [
          'version 1 on the version 2 protocol',
          { raw: lengthPrefixed(json({ v: 1, joined: [key], addrs: [] })) },
          true,
        ],
        [
          '65 joined keys',
          { v: 1, joined: Array.from({ length: 65 }, (_, i) => `${key}${i}`), addrs: [] },
          true,
        ],
        ['a bad joined entry', { v: 1, joined: [key, 7], addrs: [] }, true],
        ['a bad multiaddr', { v: 1, joined: [key], addrs: ['/ip4/127.0.0.1/tcp/notaport'] }, true],
        [
          '17 addresses',
          { v: 1, joined: [key], addrs: Array.from({ length: 17 }, () => '/ip4/127.0.0.1/tcp/1') },
          true,
        ],
        ['garbage bytes', { raw: Uint8Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256) }, true],
      ]
      const reputation = node.mesh.node.reputation
      const plainId = plain.peerId.toString()
      for (const [what, message, penalized] of cases) {
        const before = node.events('topic:protocol-error').length
        const points = reputation.penalty(plainId)
        const reply = await send(message)
        expectRejected(reply, what)
        await waitFor(() => node.events('topic:protocol-error').length > before, {
          what: `${what}: topic:protocol-error`,
        })
        const error = node.events('topic:protocol-error').at(-1)
        expect(error?.peerId, what).to.equal(plainId)
        const added = reputation.penalty(plainId) - points
        if (penalized) expect(added, `${what}: penalty points`).to.be.closeTo(25, 0.5)
        else expect(added, `${what}: no penalty`).to.be.below(0.5)
      }
      // nothing was learned from any of them: the plain node never counted as a topic peer
      expect(node.events('topic:peer')).to.deep.equal([])
      expect(node.api.peers('wire')).to.deep.equal([])
      expect(node.mesh.node.state).to.equal('started')

      // a valid version 1 exchange still works, and makes the plain node a topic peer
      const reply = await send({ v: 1, joined: [key], addrs: [] })
      expect(reply.ended).to.equal('closed')
      const response = decodeResponse(lengthPrefixedPayload(reply), 1)
      expect(response.joined).to.deep.equal([key])
      expect(response.addrs).to.include(node.addr)
      await node.waitForEvent('topic:peer', (e) => e.peerId === plainId)

      // a valid version 2 exchange, signed by the plain node: the answer is signed by the node
      const plainAddr = plain.getMultiaddrs()[0].toString()
      const ts = Date.now()
      const signed = await send({
        v: 2,
        joined: [key],
        addrs: [plainAddr],
        ts,
        sigs: [await signMember(plainKey, key, ts, [plainAddr])],
      })
      expect(signed.ended).to.equal('closed')
      const answer = decodeResponse(lengthPrefixedPayload(signed), 2)
      expect(answer.joined).to.deep.equal([key])
      const nodeKey = node.libp2p.peerId.publicKey!
      const valid = await nodeKey.verify(
        memberPayload(key, answer.ts!, answer.addrs),
        Buffer.from(answer.sigs![0], 'base64url'),
      )
      expect(valid, "the node's own record verifies with its peer id").to.equal(true)
      // a signature by someone else is a forgery: penalized (50) and nothing learned
      const other = await generateKeyPair('Ed25519')
      const points = reputation.penalty(plainId)
      const forged = await send({
        v: 2,
        joined: [key],
        addrs: [plainAddr],
        ts,
        sigs: [await signMember(other, key, ts, [plainAddr])],
      })
      expectRejected(forged, 'a forged own record')
      expect(reputation.penalty(plainId) - points, 'forged: penalty points').to.be.closeTo(50, 0.5)

      // the silent streams: at most 2 held (the rest refused at once), each dropped after ~10 s
      const silentReplies = await Promise.all(silent)
      const took = Date.now() - silentStarted
      for (const r of silentReplies) expect(r.ended).to.be.oneOf(['reset', 'closed'])
      expect(took, 'ms until every silent stream was dropped').to.be.below(20_000)
      for (const s of slowStreams) expect(s.status).not.to.equal('open')
    })
  })

  describe('bad responses from the network', function () {
    this.timeout(120_000)
    let mesh: TopicTestMesh
    let plain: Libp2p
    after(async () => {
      await Promise.resolve(plain?.stop()).catch(() => {})
      await mesh?.stop()
    })

    it("drops a peer's bad responses, learns nothing from them, and accepts a valid one after", async () => {
      mesh = await TopicTestMesh.create()
      // penalties are checked, not bans: the plain peer sends bad responses in a row
      const node = await mesh.start({
        topics: ['wire'],
        dial: [],
        config: { security: { banThreshold: 1e6 } },
      })
      const key = (await node.api.topicKey('wire')).toString()
      const plainKey = await generateKeyPair('Ed25519')
      plain = await plainNode(plainKey)
      const plainAddr = plain.getMultiaddrs()[0].toString()
      const fakeKey = await generateKeyPair('Ed25519')
      const fake = peerIdFromPrivateKey(fakeKey).toString()
      const ts = Date.now()
      const base = {
        v: 2,
        joined: [key],
        addrs: [plainAddr],
        ts,
        sigs: [await signMember(plainKey, key, ts, [plainAddr])],
      }
      const member = { id: fake, addrs: ['/ip4/127.0.0.1/tcp/9'], ts, sig: SIG }
      const bad: Array<[string, Uint8Array]> = [
        [
          'a bad member peer id',
          lengthPrefixed(json({ ...base, members: { [key]: [{ id: 'QmNope', addrs: [] }] } })),
        ],
        [
          'a bad member multiaddr',
          lengthPrefixed(json({ ...base, members: { [key]: [{ ...member, addrs: ['/x'] }] } })),
        ],
        [
          'an unsigned member',
          lengthPrefixed(json({ ...base, members: { [key]: [{ id: fake, addrs: member.addrs }] } })),
        ],
        [
          '33 members',
          lengthPrefixed(
            json({
              ...base,
              members: { [key]: Array.from({ length: 33 }, () => ({ id: fake, addrs: [] })) },
            }),
          ),
        ],
        ['a bad own multiaddr', lengthPrefixed(json({ ...base, addrs: ['/ip6/zzz/tcp/1'] }))],
        ['version 1 on the version 2 protocol', lengthPrefixed(json({ ...base, v: 1, members: {} }))],
        ['version 2 without signatures', lengthPrefixed(json({ ...base, sigs: undefined, members: {} }))],
        ['invalid JSON', lengthPrefixed(utf8('{"v":1,"joined":'))],
        [
          'a length prefix above 64 KiB',
          Uint8Array.from([...varint(LIMITS.maxMessageBytes + 1), 0x7b, 0x7d]),
        ],
        ['garbage', Uint8Array.from({ length: 512 }, (_, i) => (i * 31) % 256)],
      ]
      const good = lengthPrefixed(
        json({
          ...base,
          members: { [key]: [{ ...member, sig: await signMember(fakeKey, key, ts, member.addrs) }] },
        }),
      )
      const requests: unknown[] = []
      let served = 0
      let goodServedAt = 0
      let released = false
      await plain.handle(TOPICS_PROTOCOL, async (stream) => {
        try {
          const lp = lpStream(stream, { maxDataLength: LIMITS.maxMessageBytes })
          // Meshkit's own request must be valid
          requests.push(decodeRequest((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray(), 2))
          const i = served++
          // bad ones in order, then (the node's lookups keep asking) garbage until the test says so
          const response = released ? good : (bad[i] ?? bad[bad.length - 1])[1]
          if (released && goodServedAt === 0) goodServedAt = Date.now()
          stream.send(response)
          await stream.close({ signal: AbortSignal.timeout(10_000) })
        } catch (err) {
          stream.abort(err as Error)
        }
      })
      // an outbound connection starts an exchange; each join/leave starts another
      await node.libp2p.dial(plain.getMultiaddrs()[0])
      for (let i = 0; served < bad.length; i++) {
        const before = served
        if (i % 2 === 0) await node.api.join('trigger')
        else await node.api.leave('trigger')
        await waitFor(() => served > before, { timeoutMs: 15_000, what: `response ${before + 1} served` })
      }
      await new Promise((r) => setTimeout(r, 300))
      expect(node.events('topic:peer'), 'nothing learned from bad responses').to.deep.equal([])
      const known = await collectPeers((signal) => node.api.findPeersForTopic('wire', { signal }), {
        timeoutMs: 1_000,
      })
      expect(known.size, 'no member learned from bad responses').to.equal(0)
      expect(node.mesh.node.state).to.equal('started')
      // each bad response cost the plain peer a malformed-message penalty (25 points)
      expect(node.mesh.node.reputation.penalty(plain.peerId)).to.be.at.least(25 * bad.length - 1)

      // the next exchange gets the valid response
      released = true
      await node.api.join(served % 2 === 0 ? 'trigger-again' : 'trigger')
      const peerEvent = await node.waitForEvent('topic:peer', (e) => e.peerId === plain.peerId.toString())
      expect(peerEvent.at).to.be.at.least(goodServedAt)
      expect(node.api.peers('wire')).to.deep.equal([plain.peerId.toString()])
      // and the member it listed is known (relayed)
      const found = await collectPeers((signal) => node.api.findPeersForTopic('wire', { signal }), {
        timeoutMs: 2_000,
        stopWhen: (ids) => ids.has(fake),
      })
      expect([...found]).to.include.members([plain.peerId.toString(), fake])
      expect(requests.length).to.be.greaterThan(bad.length)
      for (const r of requests) {
        const request = r as { joined: string[]; addrs: string[]; ts: number; sigs: string[] }
        expect(request.joined).to.include(key)
        // signed by the node itself, over the addresses it sent
        const i = request.joined.indexOf(key)
        const ok = await node.libp2p.peerId.publicKey!.verify(
          memberPayload(key, request.ts, request.addrs),
          Buffer.from(request.sigs[i], 'base64url'),
        )
        expect(ok, 'the request carries a valid signature of the node').to.equal(true)
      }
    })

    it("a peer's answer built before its newer word (it left the topic meanwhile) does not undo that word", async () => {
      mesh ??= await TopicTestMesh.create()
      const node = await mesh.start({ topics: ['stale'], dial: [] })
      const key = (await node.api.topicKey('stale')).toString()
      const lKey = await generateKeyPair('Ed25519')
      const leaver = await plainNode(lKey)
      try {
        const addr = leaver.getMultiaddrs()[0].toString()
        const ts = Date.now()
        const inTopic = {
          v: 2,
          joined: [key],
          addrs: [addr],
          ts,
          sigs: [await signMember(lKey, key, ts, [addr])],
        }
        let newer: RawReply | undefined
        // the node asks the leaver (its outbound connection starts an exchange); before answering, the
        // leaver leaves and tells the node so in its own request; then the answer it built before arrives
        await leaver.handle(TOPICS_PROTOCOL, async (stream) => {
          try {
            const lp = lpStream(stream, { maxDataLength: LIMITS.maxMessageBytes })
            await lp.read({ signal: AbortSignal.timeout(10_000) })
            newer = await rawExchange(leaver, node.libp2p.peerId, {
              v: 2,
              joined: [],
              addrs: [addr],
              ts,
              sigs: [],
            })
            stream.send(lengthPrefixed(json({ ...inTopic, members: {} })))
            await stream.close({ signal: AbortSignal.timeout(10_000) })
          } catch (err) {
            stream.abort(err as Error)
          }
        })
        await node.libp2p.dial(leaver.getMultiaddrs()[0])
        await waitFor(() => newer !== undefined, {
          timeoutMs: 15_000,
          what: "the leaver's newer request served",
        })
        expect(newer?.error, 'the newer request was served').to.equal(undefined)
        await new Promise((r) => setTimeout(r, 1_000)) // the stale answer arrives and is applied (or not)
        expect(node.api.peers('stale'), 'the leaver is no topic peer').to.deep.equal([])
        expect(node.events('topic:peer', (e) => e.peerId === leaver.peerId.toString())).to.deep.equal([])
      } finally {
        await leaver.stop()
      }
    })
  })
})

/** The payload of the first length-prefixed message of a reply. */
function lengthPrefixedPayload(reply: RawReply): Uint8Array {
  expect(reply.json, 'a JSON message').not.to.equal(undefined)
  return json(reply.json)
}
