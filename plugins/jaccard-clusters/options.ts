/**
 * The options of jaccardClusters() as zod schemas: each default is written here, once. The plugin
 * validates its config with them; ClusterManager, ClusteringService and MinHashIndex resolve what they
 * are given with the same schemas (an option out of bounds is MESH_ERR_CLUSTERS_INVALID_OPTION).
 */
import { durationSchema, z } from 'meshkit/plugin'
import { invalidOption } from './errors.js'
import { TAG_LIMITS } from './wire.js'

/** MinHash LSH parameters (see MinHashIndex). */
export const minHashOptions = z.strictObject({
  /** Number of bands. @default 20 */
  bands: z.number().int().min(1).max(512).default(20),
  /** Rows (hash values) per band. @default 5 */
  rows: z.number().int().min(1).max(64).default(5),
  /** Seed of the hash family. @default 0x9e3779b9 */
  seed: z.number().int().optional(),
})

/** The matching, cleanup and cap rules of a ClusterManager. */
export const clusterRulesShape = {
  /** Jaccard threshold for assignment and `findSimilarClusters`, in (0, 1]. @default 0.7 */
  threshold: z.number().gt(0).max(1).default(0.7),
  /** Members not seen for this long are removed; clusters empty this long too. @default '5m' */
  inactiveAfter: durationSchema("'5m'").default(300_000),
  /** How often cleanup runs. @default inactiveAfter / 5 (at least 1 s) */
  cleanupInterval: durationSchema("'1m'").optional(),
  /** `assignPeer` creates a cluster when none reaches the threshold. @default true */
  autoCreate: z.boolean().default(true),
  /** Remove clusters that stayed empty for `inactiveAfter`. @default true */
  removeEmptyClusters: z.boolean().default(true),
  /** `'exact'` (prefix-filtering index) or `{ minhash: { bands, rows } }` (approximate). @default 'exact' */
  index: z.union([z.literal('exact'), z.strictObject({ minhash: minHashOptions })]).default('exact'),
  /** Lowest threshold the exact index serves without scanning (for `findSimilarClusters(id, lower)`). @default threshold */
  indexMinThreshold: z.number().gt(0).max(1).optional(),
  /**
   * Clusters at most for a peer's tags to create one; at the cap the longest-empty auto-created
   * cluster gives way, or none is created. @default 1024
   */
  maxClusters: z.number().int().min(1).max(1_000_000).default(1024),
  /** Matching clusters one peer joins at most (the most similar). @default 8 */
  maxClustersPerPeer: z.number().int().min(1).max(1024).default(8),
  /** Member peers known at once; beyond, the least recently active one is forgotten. @default 2048 */
  maxPeers: z.number().int().min(1).max(1_000_000).default(2048),
}

/** What the clustering service adds to the rules: this node's tags, protection, dialling and timers. */
export const clusteringServiceShape = {
  /** This node's own topic tags (sent to peers; `setTags()` changes them). @default [] */
  tags: z.array(z.string().min(1).max(TAG_LIMITS.maxTagLength)).max(TAG_LIMITS.maxTags).default([]),
  /** Best members of each own cluster protected from pruning (libp2p peer tag). @default 3 */
  protectBest: z.number().int().min(0).max(1000).default(3),
  /** Connected members wanted per own cluster; below it the best known are dialled. @default 4 */
  targetConnectionsPerCluster: z.number().int().min(0).max(1000).default(4),
  /** How often connected cluster members are pinged. @default '30s' */
  pingInterval: durationSchema("'30s'").default(30_000),
  /** How often protection and the per-cluster target are checked (also after every change). @default '5s' */
  maintainInterval: durationSchema("'5s'").default(5_000),
  /** A member this node never dialled itself is dialled back only after it stayed connected this long. @default '1m' */
  trustAfter: durationSchema("'1m'").default(60_000),
  /** A member without that trust is forgotten this long after it left (not `inactiveAfter`). @default '30s' */
  forgetUntrustedAfter: durationSchema("'30s'").default(30_000),
}

/** The rules as ClusterManager reads them (unknown keys, such as the service's, are left out). */
export const clusterRules = z.object(clusterRulesShape)
/** The options as ClusteringService reads them. */
export const clusteringServiceOptions = z.object({ ...clusterRulesShape, ...clusteringServiceShape })

export type MinHashOptions = z.input<typeof minHashOptions>
/** Resolved rules: every default applied. */
export type ClusterRules = z.output<typeof clusterRules>
/** Resolved service options: every default applied. */
export type ClusteringSettings = z.output<typeof clusteringServiceOptions>

/** `input` checked and completed by `schema`; a problem is MESH_ERR_CLUSTERS_INVALID_OPTION. */
export function resolveOptions<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input)
  if (result.success) return result.data
  const issue = result.error.issues[0]
  const path = issue.path.join('.')
  throw invalidOption(
    `${path ? `${path}: ` : ''}${issue.message} (got ${JSON.stringify(valueAt(input, issue.path))})`,
  )
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input
  for (const key of path)
    v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[key] : undefined
  return v
}
