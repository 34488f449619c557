import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'

/**
 * The DHT key of a topic: a CIDv1 with the `raw` codec (0x55) and a sha2-256 multihash of the UTF-8 bytes
 * of `/<namespace>/topic/<topic>`. Peers of the topic are provider records under this CID, so any
 * js-libp2p (or go/rust) node on the same DHT protocol finds them with `findProviders(cid)`:
 *
 *   sha256('/meshkit/topic/ai-research') -> CIDv1(raw) -> bafkrei...
 */
export async function topicKey(namespace: string, topic: string): Promise<CID> {
  const digest = await sha256.digest(new TextEncoder().encode(`/${namespace}/topic/${topic}`))
  return CID.createV1(raw.code, digest)
}
