/**
 * The NAT lab: per test, a small internet in network namespaces, with NAT routers whose behaviour is
 * chosen per site (see docs/nat.md for the topology, the addresses and the nft rules of each behaviour).
 *
 * ```
 *   public hosts                 "inet" namespace                      NAT sites
 *  ┌──────────┐ eth0   ┌────────────────────────────────────┐   wan ┌────────┐ lan (bridge) ┌──────┐
 *  │ p1       ├────────┤ seg-a 198.51.100.1/24 (bridge)     │       │ router ├──────────────┤ host │
 *  │198.51.100│        │        routes between segments     ├───────┤ nft NAT│ 198.18.N.1   │ .N.10│
 *  └──────────┘        │ seg-b 203.0.113.1/24  (bridge)     │       └────────┘              └──────┘
 *                      └────────────────────────────────────┘
 * ```
 *
 * Only documentation ranges are used on the "internet" (198.51.100.0/24, 203.0.113.0/24) and benchmark
 * subnets (198.18.0.0/15) on the LANs; nothing is connected to the root namespace. Every namespace is made
 * with {@link createNetns} (so the exit/signal handler of netns.ts deletes it too) and deleted by
 * {@link Lab.destroy}, which also kills the lab's processes; deleting a namespace deletes its veths,
 * bridges and nft tables.
 *
 * ```ts
 * const lab = await createLab()
 * const site = await lab.addNatSite('full-cone')
 * const pub = await lab.addPublicHost()
 * const proc = lab.spawn(site.host, process.execPath, ['script.js'])
 * await lab.destroy()
 * ```
 */
import { randomBytes } from 'node:crypto'
import {
  type CommandResult,
  createNetns,
  deleteNetns,
  type NetnsProcess,
  type NetnsSpawnOptions,
  netnsExec,
  netnsIpBatch,
  netnsNft,
  netnsSpawn,
  netnsSysctl,
  nftUnavailableReason,
  type RunOptions,
} from '../netns.js'

/** A router's NAT behaviour; `none` is a public host (no NAT at all). */
export type NatBehaviour = 'none' | 'full-cone' | 'restricted-cone' | 'port-restricted-cone' | 'symmetric'

export const NAT_BEHAVIOURS: readonly NatBehaviour[] = [
  'none',
  'full-cone',
  'restricted-cone',
  'port-restricted-cone',
  'symmetric',
]

/** The public segments: documentation ranges, each a bridge in the lab's "inet" namespace. */
export const SEGMENTS = {
  a: { subnet: '198.51.100.0/24', prefix: '198.51.100.', gateway: '198.51.100.1' },
  b: { subnet: '203.0.113.0/24', prefix: '203.0.113.', gateway: '203.0.113.1' },
} as const
export type SegmentName = keyof typeof SEGMENTS

/** How many hosts a NAT site's LAN may hold (each gets its own block of ephemeral ports). */
export const MAX_HOSTS_PER_SITE = 8
/** The block of ephemeral ports (ip_local_port_range) of LAN host `index` (0-based). */
export function lanPortRange(index: number): [number, number] {
  const size = Math.floor((65535 - 32768 + 1) / MAX_HOSTS_PER_SITE)
  return [32768 + index * size, 32768 + (index + 1) * size - 1]
}

/** The "internet" name of the WAN and LAN interfaces inside a router namespace. */
const WAN_IF = 'wan'
const LAN_IF = 'lan'

export interface LabHost {
  /** Short name in the lab, e.g. `p1` or `s2h1`. */
  readonly name: string
  readonly netns: string
  /** Its (first) address: public on a segment, or 198.18.x.y behind a NAT. */
  readonly ip: string
  /** Every address it has (public hosts may have extra ones on their segment). */
  readonly addresses: readonly string[]
  /** The NAT site it sits in; undefined for a public host. */
  readonly site?: NatSite
}

export interface NatRouter {
  readonly netns: string
  /** Its behaviour now ({@link Lab.setBehaviour} changes it). */
  readonly behaviour: Exclude<NatBehaviour, 'none'>
  /** Its public (WAN) address now ({@link Lab.setWanAddress} changes it). */
  readonly wanIp: string
  /** Its LAN address, the hosts' gateway. */
  readonly lanIp: string
  /** The LAN, a 198.18.0.0/15 /24. */
  readonly lanSubnet: string
  /** Double NAT: the router whose LAN this router's WAN is on. */
  readonly outer?: NatRouter
}

export interface NatSite {
  readonly name: string
  readonly behaviour: NatBehaviour
  /** The router; undefined for a `none` site, whose only host is a public host. */
  readonly router?: NatRouter
  readonly hosts: LabHost[]
  /** The first host. */
  readonly host: LabHost
}

/**
 * The nft ruleset (table `ip natlab`) that makes a router behave as `behaviour`, with the WAN interface
 * `wan`. Every NAT behaviour drops unsolicited inbound traffic that no rule lets in (as a home router
 * does: silently, no ICMP error), answers pings on the WAN, and NATs every protocol leaving the WAN.
 *
 * - `port-restricted-cone`: `masquerade`. Linux keeps the source port when it is free, so one socket gets
 *   one public port whatever the destination (endpoint-independent mapping); conntrack lets in only
 *   replies from the exact address:port contacted (address-and-port-dependent filtering).
 * - `symmetric`: `masquerade random,fully-random`: a random public port per connection (5-tuple), so
 *   each destination sees another mapping; filtering as above.
 * - `full-cone` / `restricted-cone`: masquerade as above, plus a dynamic map, filled by every outbound
 *   packet, from the public port (`ct reply proto-dst`, the port after NAT) to the LAN host's
 *   address:port; unsolicited inbound to a mapped port is DNATed to its host. Restricted cone also
 *   records, per public port, the remote IPs contacted, and DNATs only inbound from one of those IPs
 *   (address-dependent filtering, whatever the source port). Entries live 180 s after the last outbound
 *   packet. TCP and UDP alike.
 */
export function natRuleset(behaviour: Exclude<NatBehaviour, 'none'>, wan = WAN_IF): string {
  const cone = behaviour === 'full-cone' || behaviour === 'restricted-cone'
  const restricted = behaviour === 'restricted-cone'
  const masquerade = behaviour === 'symmetric' ? 'masquerade random,fully-random' : 'masquerade'
  const lines = ['table ip natlab {']
  if (cone) {
    lines.push(
      '  # public port -> LAN host address . port, refreshed by every outbound packet',
      '  map mapping {',
      '    type inet_proto . inet_service : ipv4_addr . inet_service',
      '    flags dynamic,timeout',
      '    timeout 180s',
      '  }',
    )
    if (restricted)
      lines.push(
        '  # public port . remote IP contacted from it',
        '  set contacted {',
        '    type inet_proto . inet_service . ipv4_addr',
        '    flags dynamic,timeout',
        '    timeout 180s',
        '  }',
      )
    lines.push(
      '  chain prerouting {',
      '    type nat hook prerouting priority dstnat; policy accept;',
      restricted
        ? `    iifname "${wan}" meta l4proto { tcp, udp } meta l4proto . th dport . ip saddr @contacted dnat ip to meta l4proto . th dport map @mapping`
        : `    iifname "${wan}" meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @mapping`,
      '  }',
    )
  }
  lines.push(
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "${wan}" ${masquerade}`,
    '  }',
  )
  if (cone)
    lines.push(
      '  # after NAT (priority 200 > srcnat): the public port chosen is ct reply proto-dst',
      '  chain track {',
      '    type filter hook postrouting priority 200; policy accept;',
      `    oifname "${wan}" ct direction original meta l4proto { tcp, udp } update @mapping { meta l4proto . ct reply proto-dst : ct original ip saddr . ct original proto-src }${restricted ? ' update @contacted { meta l4proto . ct reply proto-dst . ip daddr }' : ''}`,
      '  }',
    )
  lines.push(
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    `    iifname "${wan}" ct state established,related accept`,
    `    iifname "${wan}" icmp type echo-request accept`,
    `    iifname "${wan}" drop`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname "${wan}" ct state established,related accept`,
    ...(cone ? [`    iifname "${wan}" ct status dnat accept`] : []),
    `    iifname "${wan}" drop`,
    '  }',
    '}',
  )
  return `${lines.join('\n')}\n`
}

/** The nft ruleset (table `inet natlab_loss`) dropping `percent`% of the packets entering and leaving. */
export function lossRuleset(percent: number): string {
  return [
    'table inet natlab_loss {',
    '  chain prerouting {',
    '    type filter hook prerouting priority -400; policy accept;',
    `    iifname != "lo" numgen random mod 100 < ${percent} drop`,
    '  }',
    '  chain output {',
    '    type filter hook output priority -400; policy accept;',
    `    oifname != "lo" numgen random mod 100 < ${percent} drop`,
    '  }',
    '}',
    '',
  ].join('\n')
}

/** Why the lab cannot run here (not root, no `ip`, no `nft`, no namespaces), or undefined. */
export function labUnavailableReason(): Promise<string | undefined> {
  return nftUnavailableReason()
}

export interface AddPublicHostOptions {
  /** Its segment. @default 'a' (198.51.100.0/24) */
  segment?: SegmentName
  /** How many addresses on the segment (a probe server wants 2). @default 1 */
  addresses?: number
}

export interface AddNatSiteOptions {
  /** How many hosts behind the router. @default 1 */
  hosts?: number
  /** The segment of the router's WAN address (of the host, for `none`). @default 'b' ('a' for `none`) */
  segment?: SegmentName
  /**
   * Double NAT: the router's WAN is on this site's LAN instead of a public segment (its WAN address is
   * the next host address there, its default route the outer router), so this site's traffic is NATed
   * twice: by its own router, then by the outer one (e.g. a home router behind a carrier's NAT).
   */
  behind?: NatSite
}

/** One lab: an "inet" namespace with two public segments, and the hosts and sites added to it. */
export class Lab {
  /** Prefix of every namespace of this lab, `nl<6 hex>`. */
  readonly id: string
  readonly inet: string
  readonly hosts: LabHost[] = []
  readonly sites: NatSite[] = []
  readonly #namespaces: string[] = []
  readonly #processes = new Set<NetnsProcess>()
  readonly #nextAddress: Record<SegmentName, number> = { a: 10, b: 10 }
  readonly #hostsReserved = new WeakMap<NatSite, number>()
  #nextVeth = 0
  #nextPublic = 0
  #nextSite = 0
  #destroyed = false

  private constructor(id: string) {
    this.id = id
    this.inet = `${id}-inet`
  }

  /** Makes the "inet" namespace: a bridge per segment, routing between them. */
  static async create(): Promise<Lab> {
    const lab = new Lab(`nl${randomBytes(3).toString('hex')}`)
    try {
      await lab.#netns(lab.inet)
      await netnsIpBatch(
        lab.inet,
        Object.entries(SEGMENTS).flatMap(([name, seg]) => [
          `link add seg-${name} type bridge`,
          `addr add ${seg.gateway}/24 dev seg-${name}`,
          `link set seg-${name} up`,
        ]),
      )
      await netnsSysctl(lab.inet, 'net.ipv4.ip_forward', '1')
    } catch (err) {
      await lab.destroy().catch(() => {})
      throw err
    }
    return lab
  }

  /** Every namespace of the lab (for checks). */
  get namespaces(): readonly string[] {
    return [...this.#namespaces]
  }

  async #netns(name: string): Promise<void> {
    if (this.#destroyed) throw new Error('the lab is destroyed')
    this.#namespaces.push(name)
    // lo is brought up by the namespace's first batch of ip commands
    await createNetns(name, { loopback: false })
  }

  #address(segment: SegmentName): string {
    const n = this.#nextAddress[segment]++
    if (n > 254) throw new Error(`segment ${segment} is full`)
    return `${SEGMENTS[segment].prefix}${n}`
  }

  /**
   * Joins `netns` to a segment: a veth whose inet end is on the segment's bridge, its other end `ifname`
   * in `netns` with `addresses` and the default route. `more` are further `ip` commands for `netns`.
   */
  async #attach(
    netns: string,
    ifname: string,
    segment: SegmentName,
    addresses: string[],
    more: string[] = [],
  ): Promise<void> {
    const inetEnd = `v${this.#nextVeth++}`
    await netnsIpBatch(this.inet, [
      `link add ${inetEnd} type veth peer name ${ifname} netns ${netns}`,
      `link set ${inetEnd} master seg-${segment}`,
      `link set ${inetEnd} up`,
    ])
    await netnsIpBatch(netns, [
      'link set lo up',
      ...addresses.map((a) => `addr add ${a}/24 dev ${ifname}`),
      `link set ${ifname} up`,
      `route add default via ${SEGMENTS[segment].gateway}`,
      ...more,
    ])
  }

  /** A public host: a namespace with an address (or several) on a public segment. */
  async addPublicHost(options: AddPublicHostOptions = {}): Promise<LabHost> {
    return this.#publicHost(options)
  }

  async #publicHost(options: AddPublicHostOptions): Promise<{ -readonly [K in keyof LabHost]: LabHost[K] }> {
    const segment = options.segment ?? 'a'
    const name = `p${++this.#nextPublic}`
    const netns = `${this.id}-${name}`
    const addresses = Array.from({ length: options.addresses ?? 1 }, () => this.#address(segment))
    await this.#netns(netns)
    await this.#attach(netns, 'eth0', segment, addresses)
    const host = { name, netns, ip: addresses[0], addresses }
    this.hosts.push(host)
    return host
  }

  /**
   * A site: a router namespace NATing a LAN (198.18.N.0/24, router .1, hosts .10, .11, ...) onto its WAN
   * address, with `behaviour`'s nft rules (see {@link natRuleset}). For `none`, the site is one public
   * host (no router), so that every behaviour can be used the same way.
   */
  async addNatSite(behaviour: NatBehaviour, options: AddNatSiteOptions = {}): Promise<NatSite> {
    const index = ++this.#nextSite
    const name = `s${index}`
    if (behaviour === 'none') {
      const host = await this.#publicHost({ segment: options.segment ?? 'a' })
      const site: NatSite = { name, behaviour, hosts: [host], host }
      host.site = site
      this.sites.push(site)
      return site
    }
    if (index > 2 * 255) throw new Error('too many sites for 198.18.0.0/15')
    const lanSubnetPrefix = `198.${18 + Math.floor((index - 1) / 255)}.${((index - 1) % 255) + 1}.`
    const netns = `${this.id}-${name}r`
    const outer = options.behind
    if (outer && !outer.router) throw new Error(`site ${outer.name} (none) has no LAN to sit behind`)
    const wanIp = outer ? this.#lanAddress(outer).ip : this.#address(options.segment ?? 'b')
    const router: NatRouter = {
      netns,
      behaviour,
      wanIp,
      lanIp: `${lanSubnetPrefix}1`,
      lanSubnet: `${lanSubnetPrefix}0/24`,
      ...(outer ? { outer: outer.router } : {}),
    }
    await this.#netns(netns)
    const lan = [
      `link add ${LAN_IF} type bridge`,
      `addr add ${router.lanIp}/24 dev ${LAN_IF}`,
      `link set ${LAN_IF} up`,
    ]
    if (outer?.router) {
      const outerEnd = `r${index}`
      await netnsIpBatch(outer.router.netns, [
        `link add ${outerEnd} type veth peer name ${WAN_IF} netns ${netns}`,
        `link set ${outerEnd} master ${LAN_IF}`,
        `link set ${outerEnd} up`,
      ])
      await netnsIpBatch(netns, [
        'link set lo up',
        `addr add ${wanIp}/24 dev ${WAN_IF}`,
        `link set ${WAN_IF} up`,
        `route add default via ${outer.router.lanIp}`,
        ...lan,
      ])
    } else await this.#attach(netns, WAN_IF, options.segment ?? 'b', [wanIp], lan)
    await netnsSysctl(netns, 'net.ipv4.ip_forward', '1')
    await netnsNft(netns, [], natRuleset(behaviour))
    const site: NatSite = {
      name,
      behaviour,
      router,
      hosts: [],
      get host() {
        return this.hosts[0]
      },
    }
    this.sites.push(site)
    for (let i = 0; i < (options.hosts ?? 1); i++) await this.addHost(site)
    return site
  }

  /**
   * Another host on a NAT site's LAN. Each LAN host gets its own block of ephemeral ports
   * ({@link lanPortRange}), so that two hosts never use the same local port: the cone NATs keep the port,
   * and a public port must stay one host's mapping.
   */
  /** Reserves the next LAN slot of a NAT site (before any await: hosts may be added concurrently). */
  #lanAddress(site: NatSite): { index: number; ip: string } {
    const router = site.router
    if (!router) throw new Error(`site ${site.name} (none) has no LAN`)
    const index = this.#hostsReserved.get(site) ?? 0
    this.#hostsReserved.set(site, index + 1)
    if (index >= MAX_HOSTS_PER_SITE) throw new Error(`at most ${MAX_HOSTS_PER_SITE} hosts per site`)
    return { index, ip: router.lanIp.replace(/\.1$/, `.${10 + index}`) }
  }

  async addHost(site: NatSite): Promise<LabHost> {
    const router = site.router
    if (!router) throw new Error(`site ${site.name} (none) has no LAN`)
    const { index, ip } = this.#lanAddress(site)
    const name = `${site.name}h${index + 1}`
    const netns = `${this.id}-${name}`
    await this.#netns(netns)
    const routerEnd = `h${index + 1}`
    await netnsIpBatch(router.netns, [
      `link add ${routerEnd} type veth peer name eth0 netns ${netns}`,
      `link set ${routerEnd} master ${LAN_IF}`,
      `link set ${routerEnd} up`,
    ])
    await netnsIpBatch(netns, [
      'link set lo up',
      `addr add ${ip}/24 dev eth0`,
      'link set eth0 up',
      `route add default via ${router.lanIp}`,
    ])
    const [low, high] = lanPortRange(index)
    await netnsSysctl(netns, 'net.ipv4.ip_local_port_range', `${low} ${high}`)
    const host: LabHost = { name, netns, ip, addresses: [ip], site }
    site.hosts.push(host)
    site.hosts.sort((x, y) => Number(x.ip.split('.')[3]) - Number(y.ip.split('.')[3]))
    this.hosts.push(host)
    return host
  }

  /** Starts `cmd ...args` in a host's (or a router's) namespace; killed by {@link destroy}. */
  spawn(
    target: LabHost | NatRouter | string,
    cmd: string,
    args: readonly string[] = [],
    options?: NetnsSpawnOptions,
  ): NetnsProcess {
    const proc = netnsSpawn(nsOf(target), cmd, args, options)
    this.#processes.add(proc)
    proc.exited.then(() => this.#processes.delete(proc))
    return proc
  }

  /** Runs `cmd ...args` to completion in a host's (or a router's) namespace. */
  exec(
    target: LabHost | NatRouter | string,
    cmd: string,
    args: readonly string[] = [],
    options?: RunOptions,
  ): Promise<CommandResult> {
    return netnsExec(nsOf(target), cmd, args, options)
  }

  /** The router's nft ruleset as loaded (`nft list table ip natlab`). */
  async listRules(router: NatRouter): Promise<string> {
    return (await netnsNft(router.netns, ['list', 'table', 'ip', 'natlab'])).stdout
  }

  /**
   * Drops `percent`% (0-100) of the packets entering `target` (a NAT site's router, or a host) and of
   * those it sends itself, by nftables (`numgen random mod 100 < N drop`, before conntrack): through a
   * router, each direction loses `percent`%. 0 removes the loss. (This kernel has no netem.)
   */
  async setLoss(target: NatSite | LabHost | NatRouter, percent: number): Promise<void> {
    if (!Number.isInteger(percent) || percent < 0 || percent > 100)
      throw new Error(`loss must be an integer percentage, got ${percent}`)
    const netns =
      'behaviour' in target && 'hosts' in target ? nsOf(target.router ?? target.host) : nsOf(target)
    // declare-then-delete makes the removal idempotent
    await netnsNft(netns, [], 'table inet natlab_loss {}\ndelete table inet natlab_loss\n')
    if (percent > 0) await netnsNft(netns, [], lossRuleset(percent))
  }

  /**
   * Changes a NAT site's router to `behaviour` at run time: its nft table `ip natlab` is replaced in one
   * transaction (the cone maps start empty). Connections already tracked keep their mappings; new ones
   * get the new behaviour.
   */
  async setBehaviour(site: NatSite, behaviour: Exclude<NatBehaviour, 'none'>): Promise<void> {
    const router = site.router
    if (!router) throw new Error(`site ${site.name} (none) has no router`)
    // declare-then-delete makes the replacement one atomic nft transaction
    await netnsNft(router.netns, [], `table ip natlab {}\ndelete table ip natlab\n${natRuleset(behaviour)}`)
    ;(router as { behaviour: NatRouter['behaviour'] }).behaviour = behaviour
    ;(site as { behaviour: NatBehaviour }).behaviour = behaviour
  }

  /**
   * Gives a NAT site's router a new WAN address on its segment (as an ISP's new DHCP lease does): the old
   * address is removed (masquerade forgets the connections NATed to it), the new one added, the default
   * route restored. Returns the new address.
   */
  async setWanAddress(site: NatSite): Promise<string> {
    const router = site.router
    if (!router) throw new Error(`site ${site.name} (none) has no router`)
    if (router.outer) throw new Error(`site ${site.name} sits behind another NAT: its WAN is on a LAN`)
    const segment = (Object.keys(SEGMENTS) as SegmentName[]).find((k) =>
      router.wanIp.startsWith(SEGMENTS[k].prefix),
    )!
    const next = this.#address(segment)
    await netnsIpBatch(router.netns, [
      `addr del ${router.wanIp}/24 dev ${WAN_IF}`,
      `addr add ${next}/24 dev ${WAN_IF}`,
      `route replace default via ${SEGMENTS[segment].gateway}`,
    ])
    ;(router as { wanIp: string }).wanIp = next
    return next
  }

  /** Kills the lab's processes and deletes every namespace (with its veths, bridges and nft tables). */
  async destroy(): Promise<void> {
    this.#destroyed = true
    await Promise.all([...this.#processes].map((p) => p.kill('SIGKILL')))
    const errors: unknown[] = []
    // hosts first, the inet namespace last
    await Promise.all(
      [...this.#namespaces].reverse().map((ns) =>
        deleteNetns(ns).then(
          () => this.#namespaces.splice(this.#namespaces.indexOf(ns), 1),
          (err) => errors.push(err),
        ),
      ),
    )
    if (errors.length > 0)
      throw new AggregateError(errors, `could not delete every namespace of lab ${this.id}`)
  }
}

function nsOf(target: LabHost | NatRouter | string): string {
  return typeof target === 'string' ? target : target.netns
}

/** A new, empty lab (the "inet" namespace with both public segments). */
export function createLab(): Promise<Lab> {
  return Lab.create()
}
