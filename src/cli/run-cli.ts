import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { isMeshError, LOG_FORMATS, LOG_LEVELS, multiaddrSchema } from 'meshkit'
import { registerDemoCommand } from './demo-command.js'
import { registerGossipCommands } from './gossip-commands.js'
import { registerKeygenCommand } from './keygen-command.js'
import { registerStatusCommands } from './status-commands.js'

/** This Meshkit's version, from its package.json. */
function meshkitVersion(): string {
  const file = fileURLToPath(new URL('../../../package.json', import.meta.url))
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version
}

/** Exit codes: 0 ok, 1 unexpected failure, 2 user error (bad config, bad arguments). */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const

export interface CliIo {
  stdout: (text: string) => void
  stderr: (text: string) => void
}

const defaultIo: CliIo = {
  // nothing is written once the reader went away (EPIPE: see main.ts)
  stdout: (text) => {
    if (!process.stdout.destroyed) process.stdout.write(text)
  },
  stderr: (text) => process.stderr.write(text),
}

/**
 * Parses one value of a repeatable multiaddr option with the config's own multiaddr check, so a bad
 * value is reported against the flag that carried it (not as an invalid setting of the config file).
 */
function multiaddrArg(value: string, previous: string[] | undefined): string[] {
  const result = multiaddrSchema().safeParse(value)
  if (result.success) return [...(previous ?? []), value]
  const issue = result.error.issues[0] as { params?: { expected?: string; hint?: string } } | undefined
  const params = issue?.params
  const expected = params?.expected ?? 'a multiaddr string'
  throw new InvalidArgumentError(`Expected ${expected}${params?.hint ? `; ${params.hint}` : ''}.`)
}

/** A debounce in ms for `mesh dev`. */
function debounceArg(value: string): number {
  const ms = Number(value)
  if (!/^\d+$/.test(value) || ms > 10_000) throw new InvalidArgumentError('a debounce is 0 to 10000 ms')
  return ms
}

/**
 * Builds the `mesh` program. Every command is a thin face over library functions, loaded when the
 * command runs (so `mesh status` does not load libp2p's transports).
 */
export function createProgram(io: CliIo = defaultIo): Command {
  const program = new Command('mesh')
    .description('Meshkit: peer-to-peer mesh networks on js-libp2p')
    .version(meshkitVersion(), '-V, --version', "print Meshkit's version")
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })

  program
    .command('start')
    .description('run a node from mesh.config.ts (or the defaults)')
    .option('-c, --config <path>', 'config file (default: search the current directory)')
    .option('-d, --data-dir <dir>', 'data dir for the identity key and datastore (default: .mesh)')
    .option('-l, --listen <multiaddr...>', 'listen address (repeatable); replaces the config', multiaddrArg)
    .option('--dial <multiaddr...>', 'dial this peer address after start (repeatable)', multiaddrArg)
    .option('--json', 'print JSON lines on stdout: a started event, then one line per node event')
    .addOption(new Option('--log-level <level>', 'log level on stderr').choices(LOG_LEVELS))
    .addOption(
      new Option('--log-format <format>', 'log lines on stderr as text, or JSON lines (pino-compatible)')
        .choices(LOG_FORMATS)
        .default('text'),
    )
    .option('--mode <mode>', 'mode passed to a config function', 'production')
    .option(
      '--local',
      'a mesh on this machine: listen on 127.0.0.1, dial loopback peers, no per-host limits for them',
    )
    .option('-t, --topic <name>', 'join this topic once started (repeatable)', topicArg)
    .option('--no-control', 'do not serve the control API (mesh status, peers, ... need it)')
    .option('--control-port <port>', 'control API port on 127.0.0.1 (default: a free port)', portArg)
    .option('--control-socket <path>', 'serve the control API on this unix socket instead of TCP')
    .option('--dashboard', 'serve the dashboard on the control API and print its URL')
    .action(async (opts, cmd: Command) =>
      (await import('./start-command.js')).startCommand({ ...opts, cwd: process.cwd() }, io, cmd),
    )

  program
    .command('nat')
    .description(
      "print the NAT verdict of the node running in the data dir, or classify this node's NAT (UDP and TCP) once",
    )
    .option('-c, --config <path>', 'config file (default: search the current directory)')
    .option('-d, --data-dir <dir>', 'data dir for the identity key and datastore (default: .mesh)')
    .option('--json', 'print one JSON object: {event:"nat", peerId, udp, tcp, trigger, at, ms}')
    .addOption(new Option('--log-level <level>', 'log level on stderr').choices(LOG_LEVELS))
    .option('--mode <mode>', 'mode passed to a config function', 'production')
    .action(async (opts) =>
      (await import('./nat-command.js')).natCommand({ ...opts, cwd: process.cwd() }, io),
    )

  program
    .command('init')
    .description('create a project from a template: basic, relay, nat, chat or plugin')
    .argument('<dir>', 'the project directory (its name becomes the package name)')
    .option('-t, --template <name>', 'basic | relay | nat | chat | plugin', 'basic')
    .option('--no-install', 'do not run `npm install` in the new project')
    .option('-f, --force', 'write into a non-empty directory (overwrites the files the template has)')
    .option('--name <package-name>', 'the package name (default: the directory name)')
    .option('--meshkit <spec>', 'version spec of the meshkit dependency, e.g. file:../meshkit-0.1.0.tgz')
    .action(async (dir: string, opts) =>
      (await import('./init-command.js')).initCommand({ ...opts, dir, cwd: process.cwd() }, io),
    )

  program
    .command('dev')
    .description('run a node that follows mesh.config.ts: each save is applied with the smallest change')
    .option('-c, --config <path>', 'config file (default: search the current directory)')
    .option('-d, --data-dir <dir>', 'data dir for the identity key and datastore (default: .mesh)')
    .option('-l, --listen <multiaddr...>', 'listen address (repeatable); replaces the config', multiaddrArg)
    .option('--dial <multiaddr...>', 'dial this peer address after start (repeatable)', multiaddrArg)
    .option('--json', 'print JSON lines: started, control, one `reload` line per reload, node events')
    .addOption(new Option('--log-level <level>', 'log level on stderr').choices(LOG_LEVELS))
    .addOption(
      new Option('--log-format <format>', 'log lines on stderr as text, or JSON lines (pino-compatible)')
        .choices(LOG_FORMATS)
        .default('text'),
    )
    .option('--mode <mode>', 'mode passed to a config function', 'development')
    .option(
      '--local',
      'a mesh on this machine: listen on 127.0.0.1, dial loopback peers, no per-host limits for them',
    )
    .option(
      '-t, --topic <name>',
      'join this topic once started, and again after a rebuild (repeatable)',
      topicArg,
    )
    .option('--no-control', 'do not serve the control API and dashboard')
    .option('--control-port <port>', 'control API port on 127.0.0.1 (default: a free port)', portArg)
    .option('--debounce <ms>', 'saves closer together than this are one reload (default: 50)', debounceArg)
    .action(async (opts) =>
      (await import('./dev-command.js')).devCommand({ ...opts, cwd: process.cwd() }, io),
    )

  registerStatusCommands(program, io)

  registerGossipCommands(program, io)

  registerDemoCommand(program, io)

  registerKeygenCommand(program, io)

  return program
}

/** A TCP port number for an option. */
function portArg(value: string): number {
  const port = Number(value)
  if (!/^\d+$/.test(value) || port > 65535) throw new InvalidArgumentError('a port is 0 to 65535')
  return port
}

/** Collects repeated `--topic` values, checking each. */
function topicArg(value: string, previous: string[] = []): string[] {
  if (value.length === 0 || value.length > 128) {
    throw new InvalidArgumentError(`a topic is 1 to 128 characters, got ${value.length}`)
  }
  return [...previous, value]
}

/** Runs the CLI and returns the exit code; never throws. */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = createProgram(io)
  try {
    await program.parseAsync(argv, { from: 'user' })
    return EXIT.ok
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage
    }
    if (isMeshError(err) && err.userError) {
      io.stderr(`error ${err.describe()}\n`)
      return EXIT.usage
    }
    io.stderr(`mesh: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    if (isMeshError(err))
      for (const e of err.errors) io.stderr(`  also: ${e instanceof Error ? e.message : String(e)}\n`)
    return EXIT.failure
  }
}
