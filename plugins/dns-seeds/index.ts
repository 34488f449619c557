import { Resolver } from 'node:dns/promises'
import { isIP } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { type BootstrapSource, definePlugin, durationSchema, type Logger, z } from 'meshkit/plugin'

/** The priority of DNS seeds among bootstrap sources: after the peer cache (10) and static peers (20). */
export const DNS_SEEDS_PRIORITY = 30

/** The most addresses one domain may yield, nested entries included: a bound on a hostile or broken zone. */
export const MAX_SEED_ADDRESSES = 256

/** The most TXT lookups one domain may cost per round, nested names included (each name is looked up once). */
export const MAX_SEED_LOOKUPS = 64

const DNSADDR_PREFIX = 'dnsaddr='

/** A DNS name as written in a config, normalised: lower case, no trailing dot, no `_dnsaddr.` prefix. */
export function normaliseDomain(name: string): string {
  return name
    .trim()
    .toLowerCase()
    .replace(/\.$/, '')
    .replace(/^_dnsaddr\./, '')
}

/** Whether `name` (normalised) is a valid DNS host name: dot-separated labels of letters, digits, `-`, `_`. */
export function isDomainName(name: string): boolean {
  if (name.length === 0 || name.length > 253 - '_dnsaddr.'.length) return false
  return name.split('.').every((label) => /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/.test(label))
}

const domainSchema = z.unknown().transform((value, ctx) => {
  const name = typeof value === 'string' ? normaliseDomain(value) : undefined
  if (name !== undefined && isDomainName(name)) return name
  ctx.addIssue({
    code: 'custom',
    message: 'invalid domain',
    params: {
      expected: 'a DNS domain name whose _dnsaddr TXT records list the seed peers',
      hint: "write e.g. 'bootstrap.example.com' (its records live at _dnsaddr.bootstrap.example.com)",
    },
  })
  return z.NEVER
}) as unknown as z.ZodType<string, string>

/** A DNS server as `setServers()` takes it: `ip`, `ip:port` or `[ipv6]:port`. */
export function isDnsServer(value: string): boolean {
  if (isIP(value) !== 0) return true
  const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value)
  const plain = /^([^:]+):(\d{1,5})$/.exec(value)
  const [, host, port] = bracketed ?? plain ?? []
  if (!host || !port || Number(port) < 1 || Number(port) > 65_535) return false
  return bracketed ? isIP(host) === 6 : isIP(host) === 4
}

const serverSchema = z.unknown().superRefine((value, ctx) => {
  if (typeof value === 'string' && isDnsServer(value)) return
  ctx.addIssue({
    code: 'custom',
    message: 'invalid DNS server',
    params: {
      expected: 'a DNS server address: an IP, ip:port or [ipv6]:port',
      hint: "write e.g. '192.0.2.53', '127.0.0.1:5353' or '[2001:db8::53]:53'",
    },
  })
}) as z.ZodType<string>

const options = z
  .strictObject({
    /**
     * Seed domains. Each names a `_dnsaddr.<domain>` TXT record set of `dnsaddr=<multiaddr>` entries, the
     * format of libp2p's bootstrap list; `/dnsaddr/<name>` entries are followed. @default []
     */
    domains: z.array(domainSchema).default([]),
    /** DNS servers to ask instead of the system resolver, e.g. `['127.0.0.1:5353']`. @default the system's */
    servers: z.array(serverSchema).min(1).optional(),
    /** The longest the lookups of one domain (nested ones included) may take in a round. @default '5s' */
    timeout: durationSchema("'5s'").default(5_000),
    /** How many levels of nested `/dnsaddr/<name>` entries are followed. @default 4 */
    maxDepth: z.number().int().min(0).max(16).default(4),
  })
  .prefault({})

type Options = z.output<typeof options>

/** Why a lookup failed, in a few words: the DNS error code when there is one. */
function describeFailure(err: unknown): string {
  const code = (err as { code?: unknown })?.code
  if (code === 'ENOTFOUND') return 'no such domain (NXDOMAIN)'
  if (code === 'ENODATA') return 'no TXT records'
  if (code === 'ECANCELLED') return 'timed out'
  if (typeof code === 'string') return code
  return err instanceof Error ? err.message : String(err)
}

/**
 * Resolves one seed domain to multiaddrs; never throws. Lookups share one resolver, cancelled when the
 * round's signal aborts or `opts.timeout` passes; whatever was found before that is kept.
 */
export async function resolveSeedDomain(
  domain: string,
  opts: Pick<Options, 'servers' | 'timeout' | 'maxDepth'>,
  signal: AbortSignal,
  logger?: Logger,
): Promise<{ addresses: string[]; error?: string }> {
  // c-ares retries once within the budget; the hard deadline below bounds the whole walk
  const resolver = new Resolver({ timeout: Math.max(1, Math.floor(opts.timeout / 2)), tries: 2 })
  if (opts.servers) resolver.setServers(opts.servers)
  const deadline = AbortSignal.any([signal, AbortSignal.timeout(opts.timeout)])
  const cancel = () => resolver.cancel()
  deadline.addEventListener('abort', cancel, { once: true })
  const found = new Set<string>()
  const visited = new Set<string>()

  let lookups = 0
  const lookup = async (name: string): Promise<string[][]> => {
    if (deadline.aborted) throw Object.assign(new Error('timed out'), { code: 'ECANCELLED' })
    if (++lookups > MAX_SEED_LOOKUPS) throw new Error(`more than ${MAX_SEED_LOOKUPS} lookups`)
    return resolver.resolveTxt(`_dnsaddr.${name}`)
  }

  /** The addresses under `name`, keeping only those ending in `/p2p/<peer>` when `peer` is given. */
  const walk = async (name: string, depth: number, peer?: string): Promise<void> => {
    if (visited.has(name)) return
    visited.add(name)
    const records = await lookup(name)
    const nested: Array<Promise<void>> = []
    for (const record of records) {
      const text = record.join('')
      if (!text.startsWith(DNSADDR_PREFIX)) {
        logger?.debug(`_dnsaddr.${name}: ignoring a TXT record that is not dnsaddr=...: ${text.slice(0, 80)}`)
        continue
      }
      const value = text.slice(DNSADDR_PREFIX.length).trim()
      let components: ReturnType<ReturnType<typeof multiaddr>['getComponents']>
      try {
        if (!value.startsWith('/')) throw new Error('a multiaddr starts with /')
        components = multiaddr(value).getComponents()
        if (components.length === 0) throw new Error('no protocols')
      } catch (err) {
        logger?.debug(
          `_dnsaddr.${name}: ignoring a bad multiaddr ${value.slice(0, 120)}: ${describeFailure(err)}`,
        )
        continue
      }
      const target = components.findLast((c) => c.name === 'p2p')?.value
      if (peer && target !== peer) continue
      if (components[0].name === 'dnsaddr') {
        const inner = normaliseDomain(components[0].value ?? '')
        if (!isDomainName(inner)) {
          logger?.debug(`_dnsaddr.${name}: ignoring ${value}: not a valid domain name`)
        } else if (depth >= opts.maxDepth) {
          logger?.debug(`_dnsaddr.${name}: not following ${value}: deeper than maxDepth (${opts.maxDepth})`)
        } else {
          nested.push(
            walk(inner, depth + 1, target).catch((err: unknown) => {
              logger?.debug(`_dnsaddr.${inner} (under ${name}): ${describeFailure(err)}`)
            }),
          )
        }
        continue
      }
      if (found.size >= MAX_SEED_ADDRESSES) break
      found.add(value)
    }
    await Promise.all(nested)
  }

  try {
    await walk(domain, 0)
    return { addresses: [...found] }
  } catch (err) {
    return { addresses: [...found], error: describeFailure(err) }
  } finally {
    deadline.removeEventListener('abort', cancel)
    resolver.cancel()
  }
}

/**
 * Bootstrap peers from DNS: every round resolves `_dnsaddr.<domain>` TXT records (`dnsaddr=<multiaddr>`,
 * as libp2p's public bootstrap list uses) and follows nested `/dnsaddr/` entries. A domain that cannot be
 * resolved (timeout, NXDOMAIN, no server) is logged and gives no peers that round; the bootstrapper's
 * backoff retries.
 */
export const dnsSeeds = definePlugin({
  name: 'dns-seeds',
  provides: ['bootstrap'],
  options,
  create: (opts) => ({
    setup: (ctx): BootstrapSource => {
      /** Domains whose last lookup failed: warned once, then logged at debug level until they recover. */
      const failing = new Set<string>()
      return {
        priority: DNS_SEEDS_PRIORITY,
        seed: true,
        candidates: async ({ signal }) => {
          const results = await Promise.all(
            opts.domains.map(async (domain) => {
              try {
                const { addresses, error } = await resolveSeedDomain(domain, opts, signal, ctx.logger)
                if (error && !signal.aborted) {
                  const line = `cannot resolve _dnsaddr.${domain}: ${error}`
                  if (failing.has(domain)) ctx.logger.debug(line)
                  else ctx.logger.warn(line)
                  failing.add(domain)
                } else if (!error) {
                  if (failing.delete(domain)) ctx.logger.info(`_dnsaddr.${domain} resolves again`)
                  if (addresses.length === 0) ctx.logger.debug(`_dnsaddr.${domain} lists no usable addresses`)
                }
                return addresses
              } catch (err) {
                ctx.logger.warn(`cannot resolve _dnsaddr.${domain}: ${describeFailure(err)}`)
                return []
              }
            }),
          )
          return [...new Set(results.flat())]
        },
      }
    },
  }),
})
