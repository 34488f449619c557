/**
 * How the CLI shows the dashboard's address. A login link (`<url>/#code=...`) is printed only to a
 * terminal: the code is single-use and valid for a minute, but output that goes to a file or a log
 * collector may be read later and by others, so it gets the plain address and how to log in instead.
 */
import { resolve } from 'node:path'
import type { ControlServer } from '../control/index.js'

/** The text after `dashboard: ` for a control server that serves the dashboard. */
export function dashboardLinkText(control: ControlServer, isTTY: boolean, dataDir: string): string {
  if (isTTY)
    return `${control.loginUrl()} (one-time login link, valid 60 s; \`mesh dashboard${dataDirArg(dataDir)}\` makes a new one)`
  return `${control.url}/ (log in with the link that \`mesh dashboard${dataDirArg(dataDir)}\` prints)`
}

/** ` -d <dir>` (quoted for a shell when needed), or nothing for `.mesh` in the current directory. */
export function dataDirArg(dataDir: string): string {
  if (resolve(dataDir) === resolve('.mesh')) return ''
  return ` -d ${/^[\w@%+=:,./-]+$/.test(dataDir) ? dataDir : `'${dataDir.replaceAll("'", "'\\''")}'`}`
}
