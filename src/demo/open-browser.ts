/** Opening the dashboard in the user's browser: only where there is a desktop, never required. */
import { spawn } from 'node:child_process'

/** Whether a browser can be opened here: macOS, Windows, or a Linux/BSD session with a display. */
export function canOpenBrowser(
  env: NodeJS.ProcessEnv = process.env,
  platform: string = process.platform,
): boolean {
  if (env.CI) return false
  if (platform === 'darwin' || platform === 'win32') return true
  return Boolean(env.DISPLAY || env.WAYLAND_DISPLAY)
}

/**
 * Opens `url` with the system's opener (`open`, `xdg-open`, or Windows' URL handler), without a shell.
 * Resolves true once the opener started, false when there is none; never throws.
 */
export function openBrowser(url: string, platform: string = process.platform): Promise<boolean> {
  const [command, args] =
    platform === 'darwin'
      ? ['open', [url]]
      : platform === 'win32'
        ? ['rundll32', ['url.dll,FileProtocolHandler', url]]
        : ['xdg-open', [url]]
  return new Promise((resolve) => {
    try {
      const child = spawn(command, args, { stdio: 'ignore', detached: true })
      child.once('error', () => resolve(false))
      child.once('spawn', () => {
        child.unref()
        resolve(true)
      })
    } catch {
      resolve(false)
    }
  })
}
