import { multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import { checkCidr } from './address-scope.js'
import { MAX_DURATION_MS, parseDuration, suggestDuration } from './duration.js'
import { LOG_LEVELS } from './logger.js'

/** Extra facts a custom check attaches to its issue, used by the error formatter. */
export interface IssueParams {
  expected: string
  hint?: string
}

/** A duration field: ms number or `'5s'`-style string, never negative, at most {@link MAX_DURATION_MS}. */
export function durationSchema(example = "'5s'") {
  return z.unknown().transform((value, ctx) => {
    const ms = parseDuration(value)
    if (ms !== undefined && ms > MAX_DURATION_MS) {
      // Node timers fire at once (after 1 ms) for anything longer, so a huge timeout would mean none.
      ctx.addIssue({
        code: 'custom',
        message: 'duration too long',
        params: {
          expected: `a duration of at most ${MAX_DURATION_MS} ms (about 24 days)`,
          hint: `write a shorter duration, e.g. ${example}`,
        } satisfies IssueParams,
      })
      return z.NEVER
    }
    if (ms === undefined) {
      const meant = suggestDuration(value)
      ctx.addIssue({
        code: 'custom',
        message: 'invalid duration',
        params: {
          expected: 'a duration >= 0: milliseconds as a number, or a string like 500ms, 5s, 2m, 1h',
          hint: meant ? `write '${meant}'` : `write e.g. ${example}`,
        } satisfies IssueParams,
      })
      return z.NEVER
    }
    return ms
  })
}

/** A multiaddr string, parsed to check it. */
export function multiaddrSchema(example = "'/ip4/0.0.0.0/tcp/4001'") {
  return z.unknown().superRefine((value, ctx) => {
    let reason = 'not a string'
    if (typeof value === 'string') {
      try {
        const parsed = multiaddr(value)
        if (!value.startsWith('/')) reason = 'a multiaddr starts with /'
        else if (parsed.getComponents().length === 0) reason = 'it has no protocols, e.g. /ip4/.../tcp/...'
        else return
      } catch (err) {
        reason = err instanceof Error ? err.message : String(err)
      }
    }
    ctx.addIssue({
      code: 'custom',
      message: 'invalid multiaddr',
      params: {
        expected: `a multiaddr string (${reason})`,
        hint: `write e.g. ${example}`,
      } satisfies IssueParams,
    })
  }) as z.ZodType<string>
}

/** An IPv4/IPv6 CIDR string such as '198.51.100.0/24'. */
export function cidrSchema() {
  return z.unknown().superRefine((value, ctx) => {
    let reason = 'not a string'
    if (typeof value === 'string') {
      try {
        checkCidr(value)
        return
      } catch (err) {
        reason = err instanceof Error ? err.message : String(err)
      }
    }
    ctx.addIssue({
      code: 'custom',
      message: 'invalid CIDR',
      params: {
        expected: `an IP range in CIDR notation (${reason})`,
        hint: "write e.g. '198.51.100.0/24'",
      } satisfies IssueParams,
    })
  }) as z.ZodType<string>
}

/** A positive integer field. */
function countSchema() {
  return z.number().int().positive()
}

/** The core config schema; plugin entries are checked separately (see resolve-config). */
export const coreConfigSchema = z.strictObject({
  name: z.string().min(1).optional(),
  dataDir: z.string().min(1).optional(),
  listen: z.array(multiaddrSchema()).optional(),
  announce: z.array(multiaddrSchema("'/ip4/203.0.113.7/tcp/4001'")).optional(),
  dial: z.array(multiaddrSchema("'/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...'")).optional(),
  plugins: z.array(z.unknown()).optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  datastore: z.enum(['persistent', 'memory']).optional(),
  connections: z
    .strictObject({
      maxConnections: countSchema().optional(),
      dialTimeout: durationSchema("'10s'").optional(),
      allow: z.array(multiaddrSchema("'/ip4/127.0.0.1'")).optional(),
      inboundConnectionThreshold: z.number().positive().optional(),
      maxIncomingPendingConnections: countSchema().optional(),
      maxIncomingPendingPerHost: countSchema().optional(),
    })
    .optional(),
  bootstrap: z
    .strictObject({
      minConnections: z.number().int().min(0).optional(),
      retryInitial: durationSchema("'1s'").optional(),
      retryMax: durationSchema("'1m'").optional(),
      dialConcurrency: countSchema().optional(),
      seedConnections: z.number().int().min(0).optional(),
    })
    .optional(),
  network: z
    .strictObject({
      publicCidrs: z.array(cidrSchema()).optional(),
      addressScope: z.enum(['public', 'private', 'all']).optional(),
      local: z.boolean().optional(),
    })
    .optional(),
  security: z
    .strictObject({
      banThreshold: z.number().positive().optional(),
      banDuration: durationSchema("'10m'").optional(),
      banIps: z.boolean().optional(),
      penaltyHalfLife: durationSchema("'10m'").optional(),
      peerDialInterval: durationSchema("'10s'").optional(),
    })
    .optional(),
  shutdownTimeout: durationSchema().optional(),
})

/** Per-path hints for fields whose generic message would not say enough. */
export const FIELD_HINTS: Record<string, string> = {
  name: "a short name for logs, e.g. 'alice'",
  dataDir: "a directory path, e.g. '.mesh'",
  logLevel: `one of ${LOG_LEVELS.join(', ')}`,
  datastore: "'persistent' (kept in <dataDir>/datastore) or 'memory'",
  'connections.maxConnections': 'a whole number above 0, e.g. 300',
  connections: "an object, e.g. { maxConnections: 300, dialTimeout: '10s' }",
  'connections.inboundConnectionThreshold': 'inbound connections per second per host, e.g. 5',
  'connections.maxIncomingPendingConnections': 'a whole number above 0, e.g. 10',
  'connections.maxIncomingPendingPerHost': 'a whole number above 0, e.g. 2',
  'network.addressScope': "'public' (internet), 'private' (a LAN mesh) or 'all' (one machine, tests)",
  'security.banThreshold': 'penalty points above 0, e.g. 100',
  'bootstrap.minConnections': 'a whole number >= 0, e.g. 3 (0 turns bootstrapping off)',
  'bootstrap.dialConcurrency': 'a whole number above 0, e.g. 4',
  bootstrap: "an object, e.g. { minConnections: 3, retryInitial: '1s', retryMax: '1m' }",
  listen: "a list of multiaddrs, e.g. ['/ip4/0.0.0.0/tcp/4001']",
  announce: "a list of multiaddrs, e.g. ['/ip4/203.0.113.7/tcp/4001']",
  dial: "a list of multiaddrs with peer ids, e.g. ['/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...']",
  plugins: "an array of plugins, e.g. [tcp(), quic()] with them imported from 'meshkit/plugins'",
}
