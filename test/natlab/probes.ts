/**
 * Drives udp-probe.js inside the lab: a probe/rendezvous server on a public host, and the behaviour check,
 * UDP hole punch and echo count clients on any host. Every wait is bounded.
 */
import { fileURLToPath } from 'node:url'
import type { NetnsProcess } from '../netns.js'
import type { Lab, LabHost, NatBehaviour } from './lab.js'
import type { CheckResult, CountResult, PunchResult } from './udp-probe.js'

/** The compiled probe script (next to this file in dist). */
export const PROBE_SCRIPT = fileURLToPath(new URL('./udp-probe.js', import.meta.url))

/** The environment of probe processes: none of the test runner's Node options. */
const probeEnv = () => ({ ...process.env, NODE_OPTIONS: undefined, DEBUG: undefined })

export const PROBE_PORT = 3478
export const PROBE_ALT_PORT = 3479

export interface ProbeServer {
  proc: NetnsProcess
  /** Main address (ip:port): probes and rendezvous go here. */
  address: string
  ip: string
  port: number
  /** The same IP's other port. */
  altPort: number
  /** The host's other IP (same port). */
  altIp: string
}

/** Starts the probe server on a public host with at least two addresses: ip1:3478, ip1:3479, ip2:3478. */
export async function startProbeServer(lab: Lab, host: LabHost): Promise<ProbeServer> {
  const [ip, altIp] = host.addresses
  if (!altIp) throw new Error(`the probe server needs two addresses (host ${host.name} has one)`)
  const binds = [`${ip}:${PROBE_PORT}`, `${ip}:${PROBE_ALT_PORT}`, `${altIp}:${PROBE_PORT}`]
  const proc = lab.spawn(
    host,
    process.execPath,
    [PROBE_SCRIPT, 'server', ...binds.flatMap((b) => ['--bind', b])],
    { env: probeEnv() },
  )
  await proc.waitUntil(() => proc.stdoutLines.find((l) => l.includes('"listening"')), {
    timeoutMs: 10_000,
    what: 'the probe server listening',
  })
  return { proc, address: binds[0], ip, port: PROBE_PORT, altPort: PROBE_ALT_PORT, altIp }
}

/** Runs a probe client to its end (bounded) and returns its result line. */
async function runClient<T extends { event: string }>(
  lab: Lab,
  host: LabHost,
  args: string[],
  event: T['event'],
  timeoutMs: number,
): Promise<T> {
  const proc = lab.spawn(host, process.execPath, [PROBE_SCRIPT, ...args], { env: probeEnv() })
  try {
    const line = await proc.waitUntil(
      () => proc.stdoutLines.find((l) => l.includes(`"event":"${event}"`) || l.includes('"event":"error"')),
      { timeoutMs, what: `the ${event} result` },
    )
    const result = JSON.parse(line) as T | { event: 'error'; message: string }
    if (result.event === 'error')
      throw new Error(
        `probe ${args[0]} failed: ${(result as { message: string }).message}\n${proc.describe()}`,
      )
    return result as T
  } finally {
    await proc.kill('SIGKILL')
  }
}

/** The behaviour check (mapping from 3 server addresses, filtering of other port / other IP) from `host`. */
export function checkBehaviour(
  lab: Lab,
  host: LabHost,
  server: ProbeServer,
  { timeoutMs = 1000 } = {},
): Promise<CheckResult> {
  return runClient<CheckResult>(
    lab,
    host,
    [
      'check',
      '--local',
      host.ip,
      '--server',
      server.address,
      '--alt-port',
      String(server.altPort),
      '--alt-ip',
      server.altIp,
      '--timeout',
      String(timeoutMs),
    ],
    'check',
    timeoutMs * 4 + 10_000,
  )
}

/** Counts how many of `count` probes from `host` were answered (loss measurement). */
export function countEchoes(
  lab: Lab,
  host: LabHost,
  server: ProbeServer,
  count: number,
): Promise<CountResult> {
  return runClient<CountResult>(
    lab,
    host,
    ['count', '--local', host.ip, '--server', server.address, '--count', String(count)],
    'count',
    20_000,
  )
}

let nextSession = 0

/** A plain UDP hole punch between `a` and `b`, rendezvous at the probe server; both sides' results. */
export async function udpPunch(
  lab: Lab,
  a: LabHost,
  b: LabHost,
  server: ProbeServer,
  { timeoutMs = 3000 } = {},
): Promise<{ punched: boolean; a: PunchResult; b: PunchResult }> {
  const session = `${process.pid}-${nextSession++}`
  const side = (host: LabHost, name: string) =>
    runClient<PunchResult>(
      lab,
      host,
      [
        'punch',
        '--local',
        host.ip,
        '--server',
        server.address,
        '--session',
        session,
        '--side',
        name,
        '--timeout',
        String(timeoutMs),
      ],
      'punch',
      timeoutMs + 20_000,
    )
  const [ra, rb] = await Promise.all([side(a, 'a'), side(b, 'b')])
  return { punched: ra.result === 'punched' && rb.result === 'punched', a: ra, b: rb }
}

/** What each behaviour must show in the check (the lab's contract, verified by behaviours.test.ts). */
export const EXPECTED: Record<
  NatBehaviour,
  { mapping: 'local' | 'endpoint-independent' | 'per-destination'; otherPort: boolean; otherIp: boolean }
> = {
  none: { mapping: 'local', otherPort: true, otherIp: true },
  'full-cone': { mapping: 'endpoint-independent', otherPort: true, otherIp: true },
  'restricted-cone': { mapping: 'endpoint-independent', otherPort: true, otherIp: false },
  'port-restricted-cone': { mapping: 'endpoint-independent', otherPort: false, otherIp: false },
  symmetric: { mapping: 'per-destination', otherPort: false, otherIp: false },
}

/** Whether a plain UDP punch between two behaviours can work: all pairs but PRC-symmetric and sym-sym. */
export function punchable(x: NatBehaviour, y: NatBehaviour): boolean {
  const hard = (p: NatBehaviour) => p === 'port-restricted-cone' || p === 'symmetric'
  return !((x === 'symmetric' && hard(y)) || (y === 'symmetric' && hard(x)))
}
