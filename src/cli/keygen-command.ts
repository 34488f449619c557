/**
 * `mesh keygen psk [--out <file>] [--force] [--stdout]`: a new pre-shared key for `privateNetwork()`,
 * written to a file only its owner can read (0600). The key itself is never printed, unless `--stdout`
 * asks for exactly that (then it is the only thing on stdout).
 */
import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join, relative, resolve } from 'node:path'
import type { Command } from 'commander'
import { meshError } from 'meshkit'
import type { CliIo } from './run-cli.js'

export interface KeygenPskOptions {
  cwd: string
  /** @default 'swarm.key' */
  out?: string
  force?: boolean
  stdout?: boolean
}

/** The file a new key goes to when `--out` is not given. */
export const DEFAULT_PSK_FILE = 'swarm.key'

const invalid = (what: string, reason: string, hint?: string) =>
  meshError('MESH_ERR_INVALID_ARGUMENT', [what, reason], hint ? { hint } : {})

/** Writes `text` to a new file `path` (0600): never follows a symlink, never opens an existing file. */
async function writeNew(path: string, text: string): Promise<void> {
  const handle = await open(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  )
  try {
    await handle.chmod(0o600)
    await handle.writeFile(text)
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Refuses a directory every user may write to without the sticky bit: another user could replace the
 * key file (or what `--force` renames over) there.
 */
async function checkDirectory(dir: string): Promise<void> {
  let mode: number
  try {
    mode = (await stat(dir)).mode
  } catch (err) {
    throw invalid('--out', `the directory ${dir} cannot be used (${(err as NodeJS.ErrnoException).code})`)
  }
  if ((mode & 0o002) !== 0 && (mode & 0o1000) === 0)
    throw invalid(
      '--out',
      `the directory ${dir} is writable by every user (mode ${(mode & 0o7777).toString(8)})`,
      'write the key into a directory only you can write to, e.g. your project directory',
    )
}

/** Generates a key and writes it (or prints it with `--stdout`). */
export async function keygenPskCommand(opts: KeygenPskOptions, io: CliIo): Promise<void> {
  const { generatePsk, parsePsk } = await import('meshkit/plugins')
  if (opts.stdout && opts.out !== undefined)
    throw invalid('options', '--stdout and --out exclude each other', 'pass one of them')
  const text = generatePsk()
  const fingerprint = parsePsk(text).fingerprint
  if (opts.stdout) {
    io.stdout(text)
    io.stderr(`a new network key (fingerprint ${fingerprint}) went to stdout: keep it secret\n`)
    return
  }
  const file = resolve(opts.cwd, opts.out ?? DEFAULT_PSK_FILE)
  const dir = dirname(file)
  await checkDirectory(dir)
  if (opts.force) {
    const existing = await stat(file).catch(() => undefined)
    if (existing?.isDirectory()) throw invalid('--out', `${file} is a directory`)
    // a new file beside it, then renamed over it: a symlink there is replaced, never followed
    const temp = join(dir, `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`)
    try {
      await writeNew(temp, text)
      await rename(temp, file)
    } catch (err) {
      await rm(temp, { force: true }).catch(() => {})
      throw invalid('--out', `cannot write ${file} (${(err as NodeJS.ErrnoException).code ?? err})`)
    }
  } else {
    try {
      await writeNew(file, text)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'EEXIST' || code === 'ELOOP')
        throw invalid(
          '--out',
          `${file} already exists`,
          'pass --force to replace it with a new key (every node then needs the new one)',
        )
      throw invalid('--out', `cannot write ${file} (${code ?? err})`)
    }
  }
  const shown = relative(opts.cwd, file)
  const configPath = shown && !shown.startsWith('..') ? shown : file
  io.stdout(
    [
      `wrote a new network key to ${file} (mode 600, fingerprint ${fingerprint})`,
      'Give every node of the private network this file (copy it over a secure channel) and, in its config:',
      `  plugins: [/* tcp(), noise(), yamux(), ... */ privateNetwork({ pskFile: '${configPath}' })]`,
      'Nodes without this key cannot connect to them. Anyone holding it can join: keep it secret.',
      '',
    ].join('\n'),
  )
}

/** Registers `mesh keygen psk`. */
export function registerKeygenCommand(program: Command, io: CliIo): void {
  const keygen = program.command('keygen').description('make keys: `mesh keygen psk` for privateNetwork()')
  keygen
    .command('psk')
    .description('write a new pre-shared key for privateNetwork() to a file only you can read (0600)')
    .option('-o, --out <file>', `the key file (default: ${DEFAULT_PSK_FILE})`)
    .option('-f, --force', 'replace an existing file')
    .option('--stdout', 'print the key on stdout instead of writing a file')
    .action(async (opts) => keygenPskCommand({ ...opts, cwd: process.cwd() }, io))
}
