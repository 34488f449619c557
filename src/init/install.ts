import { spawn } from 'node:child_process'
import { initError } from './errors.js'

export interface InstallOptions {
  /** Extra arguments for `npm install`. @default ['--no-audit', '--no-fund'] */
  args?: string[]
  /** Aborts the install (the npm process is killed). */
  signal?: AbortSignal
  /** Receives npm's output as it comes. */
  onOutput?: (chunk: string) => void
}

/**
 * Runs `npm install` in `dir` (the npm on PATH; npm's own config and `npm_config_*` variables apply).
 * Throws MESH_ERR_INIT_INSTALL_FAILED with the end of npm's output when it fails.
 */
export function installDependencies(dir: string, options: InstallOptions = {}): Promise<void> {
  const args = ['install', ...(options.args ?? ['--no-audit', '--no-fund'])]
  return new Promise<void>((resolve, reject) => {
    let output = ''
    const child = spawn('npm', args, {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: process.platform === 'win32',
      signal: options.signal,
    })
    const collect = (chunk: Buffer) => {
      const text = chunk.toString('utf8')
      output = (output + text).slice(-20_000)
      options.onOutput?.(text)
    }
    child.stdout.on('data', collect)
    child.stderr.on('data', collect)
    child.once('error', (err) => reject(initError('MESH_ERR_INIT_INSTALL_FAILED', [dir, err.message])))
    child.once('close', (code, signal) => {
      if (code === 0) return resolve()
      const tail = output.trim().split('\n').slice(-15).join('\n')
      const how = signal ? `killed by ${signal}` : `exit code ${code}`
      reject(initError('MESH_ERR_INIT_INSTALL_FAILED', [dir, `${how}\n${tail}`]))
    })
  })
}
