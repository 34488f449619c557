import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PeerId } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { persistentPeerStore } from '@libp2p/peer-store'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { MemoryDatastore } from 'datastore-core'
import { LevelDatastore } from 'datastore-level'
import { type Datastore, Key } from 'interface-datastore'
import { TypedEventEmitter } from 'main-event'
import { PeerRecordCache, sameButStamp } from '../src/core/peer-record-cache.js'

/** A datastore that counts the writes reaching it. */
function counting(inner: Datastore): { store: Datastore; puts: () => number; reset: () => void } {
  let puts = 0
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver)
      if (prop === 'put')
        return (...args: Parameters<Datastore['put']>) => {
          puts++
          return target.put(...args)
        }
      if (prop === 'batch')
        return () => {
          const b = target.batch()
          return {
            put: (k: Key, v: Uint8Array) => {
              puts++
              b.put(k, v)
            },
            delete: (k: Key) => b.delete(k),
            commit: (o?: object) => b.commit(o),
          }
        }
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
  return { store, puts: () => puts, reset: () => (puts = 0) }
}

async function newPeerId(): Promise<PeerId> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
}

function peerStoreOver(datastore: Datastore, self: PeerId) {
  return persistentPeerStore({
    peerId: self,
    datastore,
    events: new TypedEventEmitter(),
    logger: defaultLogger(),
  })
}

const bytes = (...b: number[]) => Uint8Array.from(b)

describe('peer record cache (the peer store over LevelDB)', () => {
  let dir: string
  let level: LevelDatastore

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshkit-peer-record-cache-'))
    level = new LevelDatastore(join(dir, 'datastore'))
    await level.open()
  })
  afterEach(async () => {
    await level.close().catch(() => {})
    await rm(dir, { recursive: true, force: true })
  })

  it("writes a stream's protocol merge once, not once per stream; the newest stamp survives a close", async () => {
    const counter = counting(level)
    const cache = new PeerRecordCache(counter.store)
    const self = await newPeerId()
    const remote = await newPeerId()
    const peers = peerStoreOver(cache, self)
    await peers.merge(remote, { multiaddrs: [multiaddr('/ip4/127.0.0.1/tcp/4001')], protocols: ['/a/1'] })
    counter.reset()
    // what libp2p does for each stream opened or accepted (connection monitor pings included)
    for (let i = 0; i < 50; i++) await peers.merge(remote, { protocols: ['/ipfs/ping/1.0.0'] })
    expect(counter.puts(), 'the first merge adds a protocol; the 49 others change only the stamp').to.equal(1)
    const seen = await peers.get(remote)
    expect(seen.protocols).to.have.members(['/a/1', '/ipfs/ping/1.0.0'])

    // a real change is written at once
    await peers.merge(remote, { protocols: ['/b/1'] })
    expect(counter.puts()).to.equal(2)
    const before = (await peers.get(remote)).protocols.length

    // the held-back stamp is written on close: the store below ends with exactly what the cache served
    await peers.merge(remote, { protocols: ['/b/1'] })
    const served = await cache.get(new Key(`/peers/${remote.toCID().toString()}`))
    expect(cache.stats.unwritten).to.equal(1)
    await cache.close()
    const reopened = new LevelDatastore(join(dir, 'datastore'))
    await reopened.open()
    try {
      const stored = await reopened.get(new Key(`/peers/${remote.toCID().toString()}`))
      expect(Buffer.from(stored).equals(Buffer.from(served))).to.equal(true)
      expect((await peerStoreOver(reopened, self).get(remote)).protocols).to.have.length(before)
    } finally {
      await reopened.close()
    }
  })

  it('writes a held-back stamp once the stored one is stampLagMs old, and before a query reads it', async () => {
    let now = 1_000_000
    const counter = counting(level)
    const cache = new PeerRecordCache(counter.store, { stampLagMs: 60_000, now: () => now })
    const self = await newPeerId()
    const remote = await newPeerId()
    const peers = peerStoreOver(cache, self)
    await peers.merge(remote, { protocols: ['/a/1'] })
    counter.reset()
    await peers.merge(remote, { protocols: ['/a/1'] })
    expect(counter.puts()).to.equal(0)
    now += 61_000
    await peers.merge(remote, { protocols: ['/a/1'] })
    expect(counter.puts(), 'stored stamp older than stampLagMs').to.equal(1)

    await peers.merge(remote, { protocols: ['/a/1'] })
    expect(cache.stats.unwritten).to.equal(1)
    const all = await peers.all()
    expect(all.map((p) => p.id.toString())).to.deep.equal([remote.toString()])
    expect(cache.stats.unwritten, 'a query over /peers/ writes the held stamps first').to.equal(0)
    const key = new Key(`/peers/${remote.toCID().toString()}`)
    expect(Buffer.from(await level.get(key)).equals(Buffer.from(await cache.get(key)))).to.equal(true)
  })

  it('stays coherent with deletes, batches and keys outside /peers/', async () => {
    const cache = new PeerRecordCache(level)
    const self = await newPeerId()
    const remote = await newPeerId()
    const peers = peerStoreOver(cache, self)
    await peers.merge(remote, { protocols: ['/a/1'] })
    await peers.delete(remote)
    expect(await peers.has(remote)).to.equal(false)
    expect(await level.has(new Key(`/peers/${remote.toCID().toString()}`))).to.equal(false)

    await peers.merge(remote, { protocols: ['/a/1'] })
    const key = new Key(`/peers/${remote.toCID().toString()}`)
    expect((await peers.get(remote)).protocols).to.deep.equal(['/a/1'])
    // a batch that overwrites and one that deletes: reads follow the batch, not what was cached
    const b = cache.batch()
    b.put(key, bytes(0x12, 0x02, 0x2f, 0x7a, 0x40, 0x01))
    await b.commit()
    expect(Buffer.from(await cache.get(key)).toString('hex')).to.equal('12022f7a4001')
    const d = cache.batch()
    d.delete(key)
    await d.commit()
    expect(await cache.has(key)).to.equal(false)

    // other keys go straight through
    const dht = new Key('/dht/record/x')
    await cache.put(dht, bytes(1, 2, 3))
    expect([...(await level.get(dht))]).to.deep.equal([1, 2, 3])
    await cache.put(dht, bytes(1, 2, 4))
    expect([...(await level.get(dht))]).to.deep.equal([1, 2, 4])
  })

  it('never keeps a record read while a newer one was being written', async () => {
    const slow = new MemoryDatastore()
    const key = new Key('/peers/bafz')
    await slow.put(key, bytes(0x12, 0x01, 0x61, 0x40, 0x01))
    // reads of the store below are slow: a write lands while the read is in flight
    const gate: { open?: () => void } = {}
    const opened = new Promise<void>((r) => {
      gate.open = r
    })
    const store = new Proxy(slow, {
      get(target, prop, receiver) {
        if (prop === 'get')
          return async (k: Key) => {
            const v = await target.get(k)
            await opened
            return v
          }
        const value = Reflect.get(target, prop, receiver)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
    const cache = new PeerRecordCache(store)
    const read = cache.get(key)
    await cache.put(key, bytes(0x12, 0x01, 0x62, 0x40, 0x02))
    gate.open?.()
    expect([...(await read)], 'the read returns what it read').to.deep.equal([0x12, 0x01, 0x61, 0x40, 0x01])
    expect([...(await cache.get(key))], 'but what is served afterwards is the newer record').to.deep.equal([
      0x12, 0x01, 0x62, 0x40, 0x02,
    ])
  })

  it('stays within maxRecords and writes the stamp of a record it lets go', async () => {
    const counter = counting(new MemoryDatastore())
    const cache = new PeerRecordCache(counter.store, { maxRecords: 4 })
    const record = (i: number, stamp: number) => bytes(0x12, 0x01, i, 0x40, stamp)
    for (let i = 0; i < 4; i++) await cache.put(new Key(`/peers/p${i}`), record(i, 1))
    await cache.put(new Key('/peers/p0'), record(0, 2))
    expect(cache.stats).to.include({ records: 4, unwritten: 1 })
    counter.reset()
    // p0 is now the most recently used; p1 goes, then p2, p3, p0 as ten others come
    for (let i = 10; i < 20; i++) await cache.put(new Key(`/peers/p${i}`), record(i, 1))
    expect(cache.stats.records).to.equal(4)
    expect(counter.puts(), 'ten new records + the stamp of p0 as it went').to.equal(11)
    expect([...(await counter.store.get(new Key('/peers/p0')))]).to.deep.equal([...record(0, 2)])
  })

  it('tells a stamp-only difference from any other', () => {
    expect(
      sameButStamp(bytes(0x12, 0x01, 0x61, 0x40, 0x01), bytes(0x12, 0x01, 0x61, 0x40, 0x81, 0x02)),
    ).to.equal(true)
    expect(sameButStamp(bytes(0x12, 0x01, 0x61, 0x40, 0x01), bytes(0x12, 0x01, 0x62, 0x40, 0x01))).to.equal(
      false,
    )
    // no trailing stamp, a stamp that is not last, a truncated field: all count as different
    expect(sameButStamp(bytes(0x12, 0x01, 0x61), bytes(0x12, 0x01, 0x61))).to.equal(false)
    expect(sameButStamp(bytes(0x40, 0x01, 0x12, 0x01, 0x61), bytes(0x40, 0x02, 0x12, 0x01, 0x61))).to.equal(
      false,
    )
    expect(sameButStamp(bytes(0x12, 0x05, 0x61, 0x40, 0x01), bytes(0x12, 0x05, 0x61, 0x40, 0x02))).to.equal(
      false,
    )
  })
})
