import { installDependencies, scaffoldProject, templateInfo } from '../init/index.js'
import { createOutput, formatMs } from './output.js'
import type { CliIo } from './run-cli.js'

export interface InitCommandOptions {
  cwd: string
  dir: string
  template?: string
  /** commander's `--no-install` sets `install: false`. @default true */
  install?: boolean
  force?: boolean
  /** The package name (default: the directory's name). */
  name?: string
  /** The `meshkit` dependency spec (default: `^<this version>`). */
  meshkit?: string
}

/** A CliIo that may say whether its stdout is a terminal (the process's own io does). */
type TerminalIo = CliIo & { isTTY?: boolean; env?: NodeJS.ProcessEnv }

/**
 * `mesh init <dir>`: scaffolds a project (scaffoldProject), then runs `npm install` in it unless
 * `--no-install`, with progress feedback, and prints the next steps.
 */
export async function initCommand(opts: InitCommandOptions, io: TerminalIo): Promise<void> {
  const out = createOutput({
    write: io.stdout,
    writeLog: io.stderr,
    isTTY: io.isTTY ?? process.stdout.isTTY === true,
    env: io.env,
  })
  const { colors } = out
  const template = opts.template ?? 'basic'
  const result = await scaffoldProject({
    dir: opts.dir,
    cwd: opts.cwd,
    template,
    force: opts.force,
    packageName: opts.name,
    meshkit: opts.meshkit,
    install: false,
  })
  out.line(
    `${colors.green('✔')} Created ${colors.bold(result.packageName)} from the ${colors.cyan(result.template)} template in ${result.dir} (${result.files.length} files)`,
  )
  let installed = false
  if (opts.install !== false) {
    const step = out.step('installing dependencies (npm install)')
    try {
      await installDependencies(result.dir)
      installed = true
      step.succeed(`dependencies installed (${formatMs(step.elapsedMs)})`)
    } catch (err) {
      step.fail('npm install failed')
      throw err
    } finally {
      out.close()
    }
  }
  // scaffoldProject ran without the install, so its next steps include `npm install`
  const next = installed ? result.nextSteps.filter((s) => s !== 'npm install') : result.nextSteps
  out.line('')
  out.line(colors.bold('Next steps:'))
  for (const s of next) out.line(`  ${colors.cyan(s)}`)
  const info = templateInfo(result.template)
  if (info.description) out.line(`\nSee README.md in the project: ${info.description}.`)
}
