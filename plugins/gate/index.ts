import { definePlugin, z } from 'meshkit/plugin'
import { connectionRefused, createGater } from './gater.js'
import { type EntryList, entryProblem, type Facts, judge, parseList, type Verdict } from './rules.js'

export type { Facts, Verdict } from './rules.js'

/** A list entry: a peer id, an IP address or a CIDR range (checked). */
const entrySchema = z.string().superRefine((value, ctx) => {
  const problem = entryProblem(value)
  if (problem)
    ctx.addIssue({
      code: 'custom',
      message: 'invalid gate entry',
      params: {
        expected: `a peer id, an IP address or a CIDR range (${problem})`,
        hint: "write e.g. '12D3KooW...', '192.0.2.7' or '10.0.0.0/8'",
      },
    })
})

const options = z
  .strictObject({
    /**
     * When not empty, only these peers and addresses may connect (either way): peer ids (`12D3KooW...`),
     * IP addresses and CIDR ranges (`10.0.0.0/8`, `fd00::/8`, `/ip4/10.0.0.0/ipcidr/8`). A relayed peer
     * matches by its peer id only (its address is the relay's). @default []
     */
    allow: z.array(entrySchema).max(10_000).default([]),
    /** Peers and addresses refused, inbound and outbound (same entries as `allow`); deny wins. @default [] */
    deny: z.array(entrySchema).max(10_000).default([]),
  })
  .prefault({})

/** The gate's API (`node.api('gate')`). */
export interface GateApi {
  /** What the gate says about a peer and/or an IP address now. */
  check(facts: { peer?: string; ip?: string }): Verdict
  /** The lists in force. */
  lists(): { allow: string[]; deny: string[] }
}

/**
 * Who may connect: `gate({ allow, deny })` with peer ids, IP addresses and CIDR ranges. A deny entry
 * refuses the connection, inbound and outbound; a non-empty allow list refuses everything it does not
 * name; deny wins over allow. Applied as a libp2p connection gater at every step where the peer or its
 * address is known (relayed connections by the remote peer id). The lists change in place: `mesh dev`,
 * `kernel.update()` or `node.reconfigurePlugin('gate', ...)` swap them and hang up on connected peers
 * that are now refused. See docs/security-network.md.
 */
export const gate = definePlugin({
  name: 'gate',
  provides: ['gate'],
  options,
  libp2pOptions: [],
  create: (initial) => {
    let current = { allow: [...initial.allow], deny: [...initial.deny] }
    let lists: { allow: EntryList; deny: EntryList } = {
      allow: parseList(initial.allow),
      deny: parseList(initial.deny),
    }
    const decide = (facts: Facts) => judge(lists.allow, lists.deny, facts)
    const api: GateApi = {
      check: (facts) => decide(facts),
      lists: () => ({ allow: [...current.allow], deny: [...current.deny] }),
    }
    return {
      setup: () => api,
      libp2p: () => ({ connectionGater: createGater(decide) }),
      reconfigure: async (next, ctx) => {
        lists = { allow: parseList(next.allow), deny: parseList(next.deny) }
        current = { allow: [...next.allow], deny: [...next.deny] }
        const refused = ctx.libp2p.getConnections().filter((c) => connectionRefused(decide, c))
        if (refused.length > 0)
          ctx.logger.info(`hanging up on ${refused.length} connection(s) the new lists refuse`)
        for (const c of refused) c.abort(new Error('refused by the gate'))
      },
    }
  },
})
