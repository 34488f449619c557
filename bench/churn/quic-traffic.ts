/**
 * What an idle QUIC connection costs on the wire (issue 12: the keep-alive that lets a peer notice a
 * dead one). Two `mesh start` processes in a network namespace of their own (root, iproute2, nftables),
 * one QUIC connection between them, nothing else to do; an nftables counter on the namespace's loopback
 * counts every UDP packet and byte (IP headers included) over `--seconds` (30) once the connection settled.
 * Run it once per quic option set and compare:
 *
 *   node dist/bench/churn/quic-traffic.js --quic '{"keepAliveInterval":1000,"maxIdleTimeout":3000}'
 *
 * Output: one JSON line: packets and bytes per second for the connection (both directions together),
 * the quic options and the machine's load.
 */
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { MeshProc, machineLoad, peerConfig, sleep, writeConfig } from './fleet.js'

const { values: opt } = parseArgs({
  options: {
    quic: { type: 'string', default: '{}' },
    seconds: { type: 'string', default: '30' },
  },
})

const ns = `meshkit-quic-${process.pid}`
const sh = (...args: string[]) => execFileSync(args[0], args.slice(1), { encoding: 'utf8' })
const inNs = (...args: string[]) => sh('ip', 'netns', 'exec', ns, ...args)

function counter(): { packets: number; bytes: number } {
  const out = inNs('nft', 'list', 'counter', 'inet', 'meshkit', 'quicbytes')
  const m = /packets (\d+) bytes (\d+)/.exec(out)
  return { packets: Number(m?.[1] ?? 0), bytes: Number(m?.[2] ?? 0) }
}

async function main(): Promise<void> {
  const quic = JSON.parse(opt.quic!)
  const seconds = Number(opt.seconds)
  const root = await mkdtemp(join(tmpdir(), 'meshkit-quic-traffic-'))
  const procs: MeshProc[] = []
  sh('ip', 'netns', 'add', ns)
  try {
    inNs('ip', 'link', 'set', 'lo', 'up')
    execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
      input: [
        'table inet meshkit {',
        '  counter quicbytes {}',
        '  chain out {',
        '    type filter hook output priority 0; policy accept;',
        '    meta l4proto udp counter name quicbytes',
        '  }',
        '}',
      ].join('\n'),
    })
    const config = (bootstrap: string[]) => {
      const c = peerConfig({ bootstrap, peerCache: false, transports: ['quic'] })
      c.plugins = (c.plugins as unknown[])
        .filter((p) => !(typeof p === 'object' && (p as { plugin: string }).plugin === 'kad-topics'))
        .map((p) => (p === 'quic' ? { plugin: 'quic', options: quic } : p))
      return c
    }
    const spawn = async (name: string, bootstrap: string[]) => {
      const dir = join(root, name)
      await mkdir(dir, { recursive: true })
      await writeConfig(dir, config(bootstrap))
      const p = new MeshProc({
        name,
        cwd: dir,
        netns: ns,
        args: ['--local', '--data-dir', join(dir, 'data'), '--listen', '/ip4/127.0.0.1/udp/0/quic-v1'],
      })
      procs.push(p)
      await p.waitStarted(60_000)
      return p
    }
    const a = await spawn('a', [])
    const b = await spawn('b', a.addresses)
    await b.waitFor((l) => l.event === 'connection:open', 30_000, 'the connection')
    await sleep(5000) // identify, the first pings
    const start = counter()
    const t0 = Date.now()
    await sleep(seconds * 1000)
    const end = counter()
    const s = (Date.now() - t0) / 1000
    const closed = b.exit !== undefined || a.exit !== undefined
    process.stdout.write(
      `${JSON.stringify({
        quic,
        seconds: Math.round(s),
        packets_per_s: Math.round(((end.packets - start.packets) / s) * 100) / 100,
        bytes_per_s: Math.round(((end.bytes - start.bytes) / s) * 10) / 10,
        closed,
        load: machineLoad().load1,
      })}\n`,
    )
  } finally {
    await Promise.all(procs.map((p) => p.kill()))
    try {
      sh('ip', 'netns', 'delete', ns)
    } catch {
      // already gone
    }
    await rm(root, { recursive: true, force: true })
  }
}

main().catch((err) => {
  process.stderr.write(`${err?.stack ?? err}\n`)
  process.exit(1)
})
