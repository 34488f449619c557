import { createPublicKey, type KeyObject, verify as verifySignature } from 'node:crypto'
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { LruMap, TokenBucket } from 'meshkit'

/**
 * Signed member records: a member signs, per topic key it joined, `meshkit/member/1|<key>|<ts>|<addrs>`
 * (addresses joined by one space, `ts` in ms since the epoch) with its own key. The public key of an
 * Ed25519 (or secp256k1) peer id is inline in the id, so anyone can check a record without a lookup; a
 * third peer can pass a record on but not forge one for another peer id, nor change its addresses.
 */
export const MEMBER_RECORD_DOMAIN = 'meshkit/member/1'

/** A signature as it travels: base64url of the 64 signature bytes (86 characters). */
export const SIGNATURE_PATTERN = /^[A-Za-z0-9_-]{86}$/

/** A member record as relayed: who, which key, where, when it was signed, the signature. */
export interface SignedMember {
  id: string
  key: string
  addrs: readonly string[]
  ts: number
  sig: string
}

/** The signed bytes of a member record. */
export function memberPayload(key: string, ts: number, addrs: readonly string[]): Uint8Array {
  return new TextEncoder().encode(`${MEMBER_RECORD_DOMAIN}|${key}|${ts}|${addrs.join(' ')}`)
}

/** Signs a member record with the member's own key; the base64url signature. */
export async function signMember(
  privateKey: PrivateKey,
  key: string,
  ts: number,
  addrs: readonly string[],
): Promise<string> {
  const sig = await privateKey.sign(memberPayload(key, ts, addrs))
  return Buffer.from(sig).toString('base64url')
}

/**
 * What a record check found: `valid`; `forged` (the signature does not verify: the relayer lied);
 * `stale` (older than the member TTL) or `future` (signed ahead of this node's clock): dropped, nobody
 * blamed; `unverifiable` (a peer id without an inline public key, e.g. RSA): dropped; `skipped`: the
 * verification budget for this message, the sender or the node was spent (dropped, nobody blamed).
 */
export type RecordVerdict = 'valid' | 'forged' | 'stale' | 'future' | 'unverifiable' | 'skipped'

export interface VerifierLimits {
  /** Records older than this (ms) are stale. */
  ttl: () => number
  /** How far ahead of this node's clock a record may be signed (ms). */
  maxSkew: number
  /** Signature checks (not cached) one sender may cost: burst and per second. */
  perPeer: { burst: number; perSecond: number }
  /** Signature checks across all senders: burst and per second. */
  global: { burst: number; perSecond: number }
  /** Verified records remembered. */
  cacheSize: number
  /** ms of signature checks per event-loop turn before the next ones wait for the next turn. */
  sliceMs: number
}

export const VERIFIER_DEFAULTS: Omit<VerifierLimits, 'ttl'> = {
  maxSkew: 60_000,
  perPeer: { burst: 256, perSecond: 16 },
  global: { burst: 2048, perSecond: 500 },
  cacheSize: 8192,
  sliceMs: 2,
}

/** Checks a signature with `key`; Ed25519 keys become node:crypto KeyObjects once (cached by the caller). */
type Checker = (data: Uint8Array, sig: Uint8Array) => boolean | Promise<boolean>

function checkerOf(key: PublicKey): Checker {
  if (key.type === 'Ed25519') {
    const object: KeyObject = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(key.raw).toString('base64url') },
      format: 'jwk',
    })
    return (data, sig) => verifySignature(null, data, object, sig)
  }
  return (data, sig) => key.verify(data, sig)
}

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * Checks member records: age first (free), then a cache of records already verified, then the signature,
 * within per-sender and global budgets, at most `sliceMs` of checks per event-loop turn (then the next
 * ones wait for the next turn), one message at a time, so that messages full of records cannot stall
 * the node. A cache hit needs the same key, ts, addresses and signature.
 */
export class MemberVerifier {
  readonly #cache: LruMap<string, string>
  readonly #peers = new LruMap<string, TokenBucket>(4096)
  /** Public keys of peer ids seen lately, ready to check with. */
  readonly #keys = new LruMap<string, Checker | null>(1024)
  readonly #global: TokenBucket
  /** One message's records are checked at a time: many hostile messages cannot pile up checks in one turn. */
  #queue: Promise<unknown> = Promise.resolve()
  #checks = 0
  /** ms spent checking in the current event-loop turn (reset at the turn's end). */
  #used = 0
  #resetScheduled = false

  constructor(
    private readonly limits: VerifierLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.#cache = new LruMap(limits.cacheSize)
    this.#global = new TokenBucket(limits.global.perSecond, limits.global.burst, now)
  }

  /** Signature checks made so far (cache hits not counted). */
  get checks(): number {
    return this.#checks
  }

  /** The age verdict alone: `stale`, `future`, or undefined when the record's time is acceptable. */
  age(ts: number): 'stale' | 'future' | undefined {
    const now = this.now()
    if (ts > now + this.limits.maxSkew) return 'future'
    if (now - ts > this.limits.ttl()) return 'stale'
    return undefined
  }

  /**
   * Checks `records` sent by `from`, at most `maxChecks` signature checks (cache hits are free); the
   * verdicts in order. Stops at the first `forged` one (the rest are `skipped`): the message is not
   * processed further.
   */
  verify(from: string, records: readonly SignedMember[], maxChecks: number): Promise<RecordVerdict[]> {
    const run = this.#queue.then(() => this.#verify(from, records, maxChecks))
    this.#queue = run.catch(() => {})
    return run
  }

  #checker(id: string): Checker | undefined {
    let checker = this.#keys.get(id)
    if (checker === undefined) {
      try {
        const key = peerIdFromString(id).publicKey
        checker = key ? checkerOf(key) : null
      } catch {
        checker = null
      }
      this.#keys.set(id, checker)
    }
    return checker ?? undefined
  }

  async #verify(from: string, records: readonly SignedMember[], maxChecks: number): Promise<RecordVerdict[]> {
    const verdicts: RecordVerdict[] = []
    let checks = 0
    for (let i = 0; i < records.length; i++) {
      const r = records[i]
      const aged = this.age(r.ts)
      if (aged) {
        verdicts.push(aged)
        continue
      }
      const cacheKey = `${r.id}|${r.key}|${r.ts}`
      const content = `${r.addrs.join(' ')}|${r.sig}`
      if (this.#cache.get(cacheKey) === content) {
        verdicts.push('valid')
        continue
      }
      const checker = this.#checker(r.id)
      if (!checker) {
        verdicts.push('unverifiable')
        continue
      }
      if (checks >= maxChecks || !this.#budget(from)) {
        verdicts.push('skipped')
        continue
      }
      checks++
      this.#checks++
      // the turn's share of checks is spent: the next ones wait for the next turn
      if (this.#used >= this.limits.sliceMs) {
        await yieldToLoop()
        this.#used = 0
      }
      const started = performance.now()
      let ok = false
      try {
        ok = await checker(memberPayload(r.key, r.ts, r.addrs), Buffer.from(r.sig, 'base64url'))
      } catch {
        ok = false
      }
      this.#spent(performance.now() - started)
      if (!ok) {
        verdicts.push('forged')
        while (verdicts.length < records.length) verdicts.push('skipped')
        return verdicts
      }
      this.#cache.set(cacheKey, content)
      verdicts.push('valid')
    }
    return verdicts
  }

  #spent(ms: number): void {
    this.#used += ms
    if (this.#resetScheduled) return
    this.#resetScheduled = true
    setImmediate(() => {
      this.#resetScheduled = false
      this.#used = 0
    })
  }

  #budget(from: string): boolean {
    let bucket = this.#peers.get(from)
    if (!bucket) {
      bucket = new TokenBucket(this.limits.perPeer.perSecond, this.limits.perPeer.burst, this.now)
      this.#peers.set(from, bucket)
    }
    if (bucket.available < 1) return false
    if (!this.#global.take()) return false
    return bucket.take()
  }
}

/**
 * This node's own member records: one signature per joined key over the node's current addresses, made
 * again when the addresses change or the records are older than `refresh` (a third of the member TTL).
 */
export class MemberSigner {
  #ts = 0
  #addrs = ''
  readonly #sigs = new Map<string, string>()

  constructor(
    private readonly privateKey: PrivateKey,
    private readonly refresh: () => number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Signatures for `keys` over `addrs` (same time stamp for all), re-signed when needed. */
  async sign(keys: readonly string[], addrs: readonly string[]): Promise<{ ts: number; sigs: string[] }> {
    const joined = addrs.join(' ')
    const now = this.now()
    if (joined !== this.#addrs || now - this.#ts >= this.refresh()) {
      this.#ts = now
      this.#addrs = joined
      this.#sigs.clear()
    }
    // a call that overlaps a re-sign keeps its own time stamp: its signatures all match it
    const ts = this.#ts
    const sigs: string[] = []
    for (const key of keys) {
      let sig = this.#ts === ts ? this.#sigs.get(key) : undefined
      if (sig === undefined) {
        sig = await signMember(this.privateKey, key, ts, addrs)
        if (this.#ts === ts) this.#sigs.set(key, sig)
      }
      sigs.push(sig)
    }
    // forget keys no longer joined
    if (this.#sigs.size > keys.length) {
      const keep = new Set(keys)
      for (const key of this.#sigs.keys()) if (!keep.has(key)) this.#sigs.delete(key)
    }
    return { ts, sigs }
  }
}
