import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { isMeshError, LOG_LEVELS, multiaddrSchema } from 'meshkit'
import { natCommand } from './nat-command.js'
import { startCommand } from './start-command.js'

/** Exit codes: 0 ok, 1 unexpected failure, 2 user error (bad config, bad arguments). */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const

export interface CliIo {
  stdout: (text: string) => void
  stderr: (text: string) => void
}

const defaultIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
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

/** Builds the `mesh` program. Every command is a thin face over library functions. */
export function createProgram(io: CliIo = defaultIo): Command {
  const program = new Command('mesh')
    .description('Meshkit: peer-to-peer mesh networks on js-libp2p')
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
    .option('--mode <mode>', 'mode passed to a config function', 'production')
    .option('-t, --topic <name>', 'join this topic once started (repeatable; needs kadTopics())', topicArg)
    .action((opts, cmd: Command) => startCommand({ ...opts, cwd: process.cwd() }, io, cmd))

  program
    .command('nat')
    .description("classify this node's NAT (UDP and TCP) once and print the verdict with its evidence")
    .option('-c, --config <path>', 'config file (default: search the current directory)')
    .option('-d, --data-dir <dir>', 'data dir for the identity key and datastore (default: .mesh)')
    .option('--json', 'print one JSON object: {event:"nat", peerId, udp, tcp, trigger, at, ms}')
    .addOption(new Option('--log-level <level>', 'log level on stderr').choices(LOG_LEVELS))
    .option('--mode <mode>', 'mode passed to a config function', 'production')
    .action((opts) => natCommand({ ...opts, cwd: process.cwd() }, io))

  return program
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
