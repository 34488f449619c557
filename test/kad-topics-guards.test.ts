/**
 * The pieces kad-topics defends itself with, one by one: the member registry (bounded, O(1) eviction,
 * joined keys never evicted, rumours before direct members, a bound per peer), signed member records
 * (MemberVerifier, MemberSigner), the dial guard (budgets and backoffs), networks (/24, /48), the DHT
 * guard's framing, and the provider store's bounds.
 */
import { performance } from 'node:perf_hooks'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { expect } from 'chai'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { DialGuard } from '../plugins/kad-topics/dial-guard.js'
import { FrameReader, KAD_MESSAGE, kadMessageType } from '../plugins/kad-topics/kad-guard.js'
import {
  MemberSigner,
  MemberVerifier,
  type SignedMember,
  signMember,
  VERIFIER_DEFAULTS,
} from '../plugins/kad-topics/member-record.js'
import { MemberRegistry } from '../plugins/kad-topics/member-registry.js'
import { replyMembers } from '../plugins/kad-topics/member-reply.js'
import { netGroup, netGroupOf } from '../plugins/kad-topics/net-group.js'
import { limitProviderStore } from '../plugins/kad-topics/provider-store.js'
import { networkOf, spreadAcrossNetworks } from '../plugins/peer-cache/index.js'

const direct = (source: string, addrs = ['/ip4/198.51.100.1/tcp/1']) => ({
  addrs,
  direct: true,
  short: false,
  source,
})
const relayed = (source: string, lastSeen: number) => ({
  addrs: ['/ip4/198.51.100.2/tcp/1'],
  direct: false,
  short: false,
  source,
  lastSeen,
})

describe('kad-topics guards', () => {
  describe('MemberRegistry', () => {
    let now = 1_000_000
    const clock = () => now
    const make = (limits: Partial<ConstructorParameters<typeof MemberRegistry>[0]> = {}) =>
      new MemberRegistry({ maxKeys: 8, maxMembers: 4, maxKeysPerPeer: 3, ttl: 60_000, ...limits }, clock)

    it('evicts the least recently used key, never a joined (pinned) one', () => {
      const r = make({ maxKeysPerPeer: 100 })
      r.pin('joined')
      r.add('joined', 'm', direct('m'))
      for (let i = 0; i < 8; i++) {
        now += 1
        r.add(`k${i}`, 'p', direct('p'))
      }
      // 'joined' + 7 others fit in 8
      expect(r.size).to.equal(8)
      expect(r.has('k0', 'p'), 'the oldest other key went').to.equal(false)
      expect(r.has('joined', 'm')).to.equal(true)
      // touching k1 makes k2 the oldest
      r.add('k1', 'q', direct('q'))
      r.add('k8', 'p', direct('p'))
      expect(r.has('k1', 'q')).to.equal(true)
      expect(r.has('k2', 'p')).to.equal(false)
      // unpinned, the joined key is an ordinary one again
      r.unpin('joined')
      for (let i = 9; i < 20; i++) r.add(`k${i}`, 'p', direct('p'))
      expect(r.has('joined', 'm')).to.equal(false)
    })

    it('with distances, a full registry keeps the keys closest to the node: a farther new key is refused', () => {
      // distance of k<n> is n; 'joined' is pinned (never evicted; room for 4 others)
      const distance = (key: string) => Number(key.slice(1))
      const r = make({ maxKeys: 5, maxKeysPerPeer: 100, distance })
      r.pin('joined')
      r.add('joined', 'm', direct('m'))
      for (const k of ['k50', 'k10', 'k40', 'k20']) {
        now += 1
        expect(r.add(k, 'p', direct('p'))).to.equal('added')
      }
      // full (4 others): the farthest goes for a closer key, whatever was touched last
      r.add('k50', 'q', direct('q'))
      expect(r.add('k30', 'p', direct('p'))).to.equal('added')
      expect(r.has('k50', 'q'), 'the farthest key went, though touched last').to.equal(false)
      // a farther key than every held one is refused, held keys stay
      expect(r.add('k99', 'p', direct('p'))).to.equal('refused')
      expect(r.has('k99', 'p')).to.equal(false)
      for (const k of ['k10', 'k20', 'k30', 'k40']) expect(r.has(k, 'p'), k).to.equal(true)
      expect(r.has('joined', 'm')).to.equal(true)
      // keys whose members all expired make room first, near or far
      now += 61_000
      r.add('k10', 'p', direct('p'))
      expect(r.add('k99', 'p', direct('p'))).to.equal('added')
      expect(r.has('k99', 'p')).to.equal(true)
      expect(r.has('k10', 'p')).to.equal(true)
    })

    it('bounds the keys one peer holds as a direct member', () => {
      const r = make()
      expect(['a', 'b', 'c'].map((k) => r.add(k, 'sybil', direct('sybil')))).to.deep.equal([
        'added',
        'added',
        'added',
      ])
      expect(r.add('d', 'sybil', direct('sybil'))).to.equal('refused')
      expect(r.heldBy('sybil')).to.equal(3)
      r.remove('a', 'sybil')
      expect(r.add('d', 'sybil', direct('sybil'))).to.equal('added')
    })

    it('evicts relayed members before direct ones; a rumour never pushes out a direct member', () => {
      const r = make()
      r.pin('k')
      r.add('k', 'd1', direct('d1'))
      r.add('k', 'r1', relayed('x', now))
      r.add('k', 'r2', relayed('x', now))
      r.add('k', 'd2', direct('d2'))
      expect(r.members('k')).to.have.length(4)
      r.add('k', 'd3', direct('d3'))
      expect(r.has('k', 'r1'), 'the oldest relayed member went').to.equal(false)
      expect(r.has('k', 'r2')).to.equal(true)
      r.add('k', 'd4', direct('d4'))
      expect(r.has('k', 'r2')).to.equal(false)
      // four direct members: a rumour finds no room, a direct member pushes out the oldest direct one
      expect(r.add('k', 'r3', relayed('x', now))).to.equal('refused')
      expect(r.add('k', 'd5', direct('d5'))).to.equal('added')
      expect(r.has('k', 'd1')).to.equal(false)
      // direct first in members()
      expect(r.members('k').map(([id]) => id)).to.have.members(['d2', 'd3', 'd4', 'd5'])
    })

    it('a relayed record never overrides a direct one; only a newer relayed record replaces one', () => {
      const r = make()
      r.pin('k')
      r.add('k', 'm', direct('m', ['/ip4/198.51.100.9/tcp/9']))
      expect(r.add('k', 'm', relayed('x', now))).to.equal('ignored')
      expect(r.get('k', 'm')?.addrs).to.deep.equal(['/ip4/198.51.100.9/tcp/9'])
      r.add('k', 'n', relayed('x', now - 10))
      expect(r.add('k', 'n', relayed('y', now - 20)), 'older').to.equal('ignored')
      expect(r.add('k', 'n', relayed('y', now - 5)), 'newer').to.equal('updated')
      expect(r.get('k', 'n')?.source).to.equal('y')
    })

    it("a member's own newer signed record, passed on, moves a direct member to its new addresses", () => {
      const r = make()
      r.pin('k')
      const proof = (addrs: string[], ts: number) => ({ addrs, ts, sig: `sig-${ts}` })
      const before = ['/ip4/198.51.100.9/tcp/9/p2p/relay0/p2p-circuit']
      // the member told us itself (its record signed at now - 100)
      r.add('k', 'm', { ...direct('m', before), proof: proof(before, now - 100) })
      const moved = ['/ip4/198.51.100.7/tcp/7/p2p/relay1/p2p-circuit']
      // an unsigned rumour, or the member's own record signed before it told us: no change
      expect(r.add('k', 'm', { ...relayed('x', now), addrs: moved })).to.equal('ignored')
      const older = { ...relayed('x', now - 200), addrs: moved, proof: proof(moved, now - 200) }
      expect(r.add('k', 'm', older)).to.equal('ignored')
      expect(r.get('k', 'm')?.addrs).to.deep.equal(before)
      // signed since (it reserved on another relay when its relay died): its new addresses count
      now += 1000
      const newer = { ...relayed('x', now - 10), addrs: moved, proof: proof(moved, now - 10) }
      expect(r.add('k', 'm', newer)).to.equal('updated')
      expect(r.get('k', 'm')).to.include({ direct: true, source: 'x' })
      expect(r.get('k', 'm')?.addrs).to.deep.equal(moved)
      expect(r.get('k', 'm')?.proof?.ts).to.equal(now - 10)
      // the same record again changes nothing
      expect(r.add('k', 'm', newer)).to.equal('ignored')
    })

    it('expires members after the TTL (a relayed one counts from when it was signed)', () => {
      const r = make()
      r.pin('k')
      r.add('k', 'd', direct('d'))
      r.add('k', 'old', relayed('x', now - 50_000))
      now += 20_000
      expect(r.members('k').map(([id]) => id)).to.deep.equal(['d'])
      now += 50_000
      expect(r.members('k')).to.deep.equal([])
      expect(r.heldBy('d')).to.equal(0)
    })

    /** Fills a 4,096-key registry, then times 100 fresh Sybils claiming 64 new keys each (ms). */
    const floodFull = (distance?: (key: string) => number) => {
      const r = new MemberRegistry({
        maxKeys: 4096,
        maxMembers: 64,
        maxKeysPerPeer: 64,
        ttl: 900_000,
        distance,
      })
      for (let i = 0; i < 4096; i++) r.add(`fill${i}`, `p${i % 64}x${Math.floor(i / 64)}`, direct('p'))
      expect(r.size).to.equal(4096)
      const started = performance.now()
      for (let round = 0; round < 100; round++) {
        for (let k = 0; k < 64; k++) r.add(`round${round}-${k}`, `sybil${round}`, direct(`sybil${round}`))
      }
      const ms = performance.now() - started
      expect(r.size).to.equal(4096)
      return ms
    }

    it('stays O(1) per operation when full: 100 fresh Sybils claiming 64 new keys each', () => {
      // 6,400 inserts, each evicting a key (the scan it replaced took ~2 s here: ~20 ms per request)
      expect(floodFull(), 'ms for 6,400 evicting inserts').to.be.below(250)
    })

    it('stays cheap when full with distances: 100 Sybils claiming 64 new keys each', () => {
      let d = 0
      const distance = () => (d = (d * 7919 + 13) % 100_003)
      // each insert compares the 4,096 keys' distances once
      expect(floodFull(distance), 'ms for 6,400 inserts into a full registry').to.be.below(250)
    })
  })

  describe('rendezvous answers', () => {
    const proofOf = (ts: number) => ({ addrs: ['/ip4/198.51.100.1/tcp/1'], ts, sig: 'sig' })
    const fresh = { age: () => undefined }

    it('hands out members it is connected to before those whose connections closed (dead until the TTL)', () => {
      let t = Date.now()
      const r = new MemberRegistry({ maxKeys: 8, maxMembers: 8, maxKeysPerPeer: 8, ttl: 900_000 }, () => t)
      // told by themselves, most recently seen first: dead2, dead1, live2, live1
      for (const id of ['live1', 'live2', 'dead1', 'dead2']) {
        t += 1000
        r.add('k', id, { ...direct(id), proof: proofOf(t) })
      }
      const alive = new Set(['live1', 'live2'])
      const all = replyMembers(r, fresh, ['k'], 'asker', 64 * 1024, (id) => alive.has(id))
      expect(all.k.map((m) => m.id)).to.deep.equal(['live2', 'live1', 'dead2', 'dead1'])
      // a reply with room for two: both live ones
      const one = JSON.stringify({ id: 'live1', addrs: proofOf(t).addrs, ts: t, sig: 'sig' }).length + 1
      const room = 2 + JSON.stringify('k').length + 4 + 2 * one
      const two = replyMembers(r, fresh, ['k'], 'asker', room, (id) => alive.has(id))
      expect(two.k.map((m) => m.id)).to.deep.equal(['live2', 'live1'])
      // without connection knowledge: the registry's order
      expect(replyMembers(r, fresh, ['k'], 'asker', 64 * 1024).k.map((m) => m.id)).to.deep.equal([
        'dead2',
        'dead1',
        'live2',
        'live1',
      ])
    })
  })

  describe('signed member records', () => {
    let key: PrivateKey
    let id: string
    const KEY = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
    const ADDRS = ['/ip4/198.51.100.1/tcp/4001']
    before(async () => {
      key = await generateKeyPair('Ed25519')
      id = peerIdFromPrivateKey(key).toString()
    })
    const verifier = (ttl = 60_000) => new MemberVerifier({ ...VERIFIER_DEFAULTS, ttl: () => ttl })
    const record = async (over: Partial<SignedMember> = {}, signer = key): Promise<SignedMember> => {
      const ts = over.ts ?? Date.now()
      const addrs = over.addrs ?? ADDRS
      return { id, key: KEY, addrs, ts, sig: await signMember(signer, over.key ?? KEY, ts, addrs), ...over }
    }

    it('accepts a record signed by its member; rejects a wrong key, other addresses or another topic', async () => {
      const v = verifier()
      expect(await v.verify('relayer', [await record()], 10)).to.deep.equal(['valid'])
      const other = await generateKeyPair('Ed25519')
      expect(await v.verify('relayer', [await record({}, other)], 10)).to.deep.equal(['forged'])
      const good = await record()
      expect(await v.verify('relayer', [{ ...good, addrs: ['/ip4/203.0.113.1/tcp/1'] }], 10)).to.deep.equal([
        'forged',
      ])
      expect(await v.verify('relayer', [{ ...good, key: `${KEY}x` }], 10)).to.deep.equal(['forged'])
      expect(await v.verify('relayer', [{ ...good, ts: good.ts + 1 }], 10)).to.deep.equal(['forged'])
    })

    it('drops stale and future records without checking them, and stops at the first forgery', async () => {
      const v = verifier(60_000)
      const stale = await record({ ts: Date.now() - 61_000 })
      const future = await record({ ts: Date.now() + 120_000 })
      expect(await v.verify('r', [stale, future], 10)).to.deep.equal(['stale', 'future'])
      expect(v.checks).to.equal(0)
      const forged = await record({}, await generateKeyPair('Ed25519'))
      const verdicts = await v.verify('r', [await record(), forged, await record()], 10)
      expect(verdicts).to.deep.equal(['valid', 'forged', 'skipped'])
    })

    it('checks a record once (cache), at most maxChecks per message and within the budgets', async () => {
      const v = verifier()
      const r = await record()
      await v.verify('r', [r], 10)
      const before = v.checks
      expect(await v.verify('r', [r, r, r], 10)).to.deep.equal(['valid', 'valid', 'valid'])
      expect(v.checks, 'cache hits cost nothing').to.equal(before)
      // a cache hit needs the same addresses and signature
      const tampered = { ...r, addrs: ['/ip4/203.0.113.1/tcp/1'] }
      expect(await v.verify('r', [tampered], 10)).to.deep.equal(['forged'])
      const base = Date.now()
      const many = await Promise.all(Array.from({ length: 5 }, (_, i) => record({ ts: base - 5_000 - i })))
      expect(await v.verify('r2', many, 3)).to.deep.equal(['valid', 'valid', 'valid', 'skipped', 'skipped'])
      // a sender's budget: 2 checks, then skipped (not blamed)
      const tight = new MemberVerifier({
        ...VERIFIER_DEFAULTS,
        perPeer: { burst: 2, perSecond: 0.001 },
        ttl: () => 60_000,
      })
      expect(await tight.verify('r', many, 10)).to.deep.equal([
        'valid',
        'valid',
        'skipped',
        'skipped',
        'skipped',
      ])
      expect(await tight.verify('other', many.slice(2), 10)).to.deep.equal(['valid', 'valid', 'skipped'])
    })

    it('an id without an inline public key cannot be checked', async () => {
      const rsa = 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N'
      const r = await record()
      expect(await verifier().verify('r', [{ ...r, id: rsa }], 10)).to.deep.equal(['unverifiable'])
    })

    it('MemberSigner signs once per key and again when the addresses change or the records age', async () => {
      let now = 1_000_000
      const signer = new MemberSigner(
        key,
        () => 1000,
        () => now,
      )
      const a = await signer.sign(['k1', 'k2'], ADDRS)
      expect(a.sigs).to.have.length(2)
      const v = new MemberVerifier({ ...VERIFIER_DEFAULTS, ttl: () => 1e12 }, () => now)
      const ok = await v.verify('r', [{ id, key: 'k2', addrs: ADDRS, ts: a.ts, sig: a.sigs[1] }], 10)
      expect(ok).to.deep.equal(['valid'])
      now += 500
      expect((await signer.sign(['k1', 'k2'], ADDRS)).ts, 'still fresh').to.equal(a.ts)
      expect((await signer.sign(['k1'], ['/ip4/198.51.100.7/tcp/1'])).ts, 'new addresses').to.equal(now)
      now += 1000
      expect((await signer.sign(['k1'], ['/ip4/198.51.100.7/tcp/1'])).ts, 'aged').to.equal(now)
    })
  })

  describe('DialGuard', () => {
    it('limits dials per source and globally, and backs off failing members and addresses', () => {
      let now = 0
      const g = new DialGuard(
        {
          perSource: { burst: 2, perSecond: 0.5 },
          global: { burst: 3, perSecond: 1 },
          backoffInitial: 1000,
          backoffMax: 8000,
          maxTracked: 100,
        },
        () => now,
      )
      expect([g.take('a'), g.take('a'), g.take('a')]).to.deep.equal([true, true, false])
      expect([g.take('b'), g.take('b')]).to.deep.equal([true, false]) // the global burst is spent
      now += 2000
      expect(g.take('a')).to.equal(true)
      const victim = '/ip4/127.0.0.1/tcp/9'
      g.failed('m1', [victim])
      expect(g.backedOff('m1')).to.equal(true)
      // the same address under another peer id is backed off too
      expect(g.usable([victim, '/ip4/127.0.0.1/tcp/10'])).to.deep.equal(['/ip4/127.0.0.1/tcp/10'])
      expect(g.usable([`${victim}/p2p/12D3KooWQkKze92ES1hjLfoMygrgQ3hfaHoXpZJJQyawsiH95AFK`])).to.deep.equal(
        [],
      )
      now += 1001
      expect(g.backedOff('m1')).to.equal(false)
      g.failed('m1', [victim])
      now += 1500
      expect(g.backedOff('m1'), 'the second wait doubles').to.equal(true)
      for (let i = 0; i < 10; i++) g.failed('m1', [victim])
      now += 8001
      expect(g.backedOff('m1'), 'capped at backoffMax').to.equal(false)
      g.failed('m2', [victim])
      g.succeeded('m2', [victim])
      expect(g.backedOff('m2')).to.equal(false)
      expect(g.usable([victim])).to.deep.equal([victim])
    })
  })

  describe('networks', () => {
    it('groups IPv4 by /24 and IPv6 by /48', () => {
      expect(netGroup('127.0.50.7')).to.equal(netGroup('127.0.50.200'))
      expect(netGroup('127.0.50.7')).not.to.equal(netGroup('127.0.51.7'))
      expect(netGroup('::ffff:127.0.50.7'), 'mapped').to.equal(netGroup('127.0.50.7'))
      expect(netGroup('2001:db8:1::1')).to.equal(netGroup('2001:db8:1:ffff::2'))
      expect(netGroup('2001:db8:1::1')).not.to.equal(netGroup('2001:db8:2::1'))
      expect(netGroup('::1')).to.equal('6:0:0:0')
      expect(netGroup('not an ip')).to.equal(undefined)
      expect(
        netGroupOf('/ip4/198.51.100.3/tcp/1/p2p/12D3KooWQkKze92ES1hjLfoMygrgQ3hfaHoXpZJJQyawsiH95AFK'),
      ).to.equal('4:198.51.100')
      expect(netGroupOf('/dns4/example.org/tcp/1')).to.equal(undefined)
      expect(networkOf('/ip4/198.51.100.3/tcp/1')).to.equal('4:198.51.100')
      expect(networkOf('/ip6/2001:db8:1::1/tcp/1')).to.equal(networkOf('/ip6/2001:db8:1:5::9/udp/1/quic-v1'))
    })

    it('the peer cache hands out candidates spread across networks', () => {
      const peer = (id: string, ip: string) => ({
        id,
        addrs: [`/ip4/${ip}/tcp/1`],
        successes: 1,
        failures: 0,
        lastSeen: 1,
      })
      const ranked = [
        peer('s1', '127.0.50.1'),
        peer('s2', '127.0.50.2'),
        peer('s3', '127.0.50.3'),
        peer('h1', '127.0.3.1'),
        peer('h2', '127.0.4.1'),
        peer('s4', '127.0.50.4'),
      ]
      expect(spreadAcrossNetworks(ranked).map((p) => p.id)).to.deep.equal([
        's1',
        'h1',
        'h2',
        's2',
        's3',
        's4',
      ])
    })
  })

  describe('DHT framing', () => {
    const lp = (body: Uint8Array) => Uint8Array.from([...varint(body.length), ...body])
    const varint = (n: number) => {
      const out: number[] = []
      while (n >= 0x80) {
        out.push((n % 0x80) | 0x80)
        n = Math.floor(n / 0x80)
      }
      out.push(n)
      return out
    }

    it('sees each message once, split or joined across chunks, and refuses one over the limit', () => {
      const seen: Array<number | undefined> = []
      const reader = new FrameReader(100, (body, length) => {
        seen.push(body ? kadMessageType(body) : undefined)
        return body ? undefined : `too long: ${length}`
      })
      const provide = lp(Uint8Array.from([0x08, KAD_MESSAGE.ADD_PROVIDER, 0x12, 2, 1, 2]))
      const find = lp(Uint8Array.from([0x12, 1, 9, 0x08, KAD_MESSAGE.FIND_NODE]))
      const both = Uint8Array.from([...provide, ...find])
      for (let i = 0; i < both.length; i++) expect(reader.push(both.subarray(i, i + 1))).to.equal(undefined)
      expect(reader.push(both)).to.equal(undefined)
      expect(seen).to.deep.equal([2, 4, 2, 4])
      expect(reader.push(Uint8Array.from(varint(101)))).to.equal('too long: 101')
      const huge = new FrameReader(100, (body, length) => (body ? undefined : String(length)))
      expect(huge.push(Uint8Array.from(varint(4 * 1024 * 1024)))).to.equal(String(4 * 1024 * 1024))
      // a message without a type field is a PUT_VALUE (proto3 zero value); garbage is undefined
      expect(kadMessageType(new Uint8Array(0))).to.equal(KAD_MESSAGE.PUT_VALUE)
      expect(kadMessageType(Uint8Array.from([0x0a, 50]))).to.equal(undefined)
    })
  })

  describe('provider store', () => {
    it('bounds the records of others per key, per provider and in all (oldest first); its own never', async () => {
      const inner = new MemoryDatastore()
      const store = limitProviderStore(inner, 'SELF', { maxRecords: 5, maxPerKey: 2, maxPerPeer: 3 })
      const put = (cid: string, peer: string) =>
        store.put(new Key(`/dht/provider/${cid}/${peer}`), Uint8Array.from([1]))
      const has = (cid: string, peer: string) => inner.has(new Key(`/dht/provider/${cid}/${peer}`))
      await put('K1', 'A')
      await put('K1', 'B')
      await put('K1', 'C')
      expect(await has('K1', 'A'), 'per key: the oldest went').to.equal(false)
      expect(store.providerRecords()).to.equal(2)
      await put('K2', 'D')
      await put('K3', 'D')
      await put('K4', 'D')
      await put('K5', 'D')
      expect(await has('K2', 'D'), 'per provider: its oldest went').to.equal(false)
      expect(store.providerRecords()).to.equal(5)
      await put('K6', 'E')
      expect(store.providerRecords(), 'in all').to.equal(5)
      expect(await has('K1', 'B'), 'in all: the oldest went').to.equal(false)
      for (let i = 0; i < 10; i++) await put(`K${i}`, 'SELF')
      expect(await has('K9', 'SELF'), 'its own records are never limited').to.equal(true)
      // a delete (kad-dht's expiry) frees the room
      await store.delete(new Key('/dht/provider/K6/E'))
      expect(store.providerRecords()).to.equal(4)
      // other keys go straight through
      await store.put(new Key('/other/x'), Uint8Array.from([1]))
      expect(await inner.has(new Key('/other/x'))).to.equal(true)
    })

    it('indexes the records a persistent store already holds, deleting what is over the bounds', async () => {
      const inner = new MemoryDatastore()
      for (let i = 0; i < 6; i++) await inner.put(new Key(`/dht/provider/K/P${i}`), Uint8Array.from([i + 1]))
      const store = limitProviderStore(inner, 'SELF', { maxRecords: 100, maxPerKey: 4, maxPerPeer: 10 })
      await store.put(new Key('/dht/provider/K/NEW'), Uint8Array.from([100]))
      expect(store.providerRecords()).to.equal(4)
      let left = 0
      for await (const _ of inner.query({ prefix: '/dht/provider' })) left++
      expect(left).to.equal(4)
      expect(await inner.has(new Key('/dht/provider/K/P0')), 'the oldest went first').to.equal(false)
      expect(await inner.has(new Key('/dht/provider/K/NEW'))).to.equal(true)
    })
  })
})
