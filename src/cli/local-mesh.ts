import { resolve as resolvePath } from 'node:path'
import type { MeshConfig } from 'meshkit'

/**
 * What `--local` lays over the config (or the defaults): a mesh on this machine. Wildcard listen
 * addresses bind loopback (`network.local`), loopback addresses are dialled (`addressScope: 'all'`),
 * and loopback peers are exempt from the per-host inbound limits (every peer shares 127.0.0.1). The
 * internet defaults stay as they are without the flag.
 */
export const LOCAL_OVERRIDES: MeshConfig = {
  network: { addressScope: 'all', local: true },
  connections: { allow: ['/ip4/127.0.0.1', '/ip6/::1'] },
}

/** The command line's overrides of the config: `--data-dir` is relative to where the command runs. */
export function cliOverrides(
  opts: { cwd: string; dataDir?: string; listen?: string[]; dial?: string[]; local?: boolean },
  extra: MeshConfig = {},
): MeshConfig {
  return {
    ...(opts.local ? LOCAL_OVERRIDES : {}),
    // `dataDir` in a config file is relative to that file; on the command line, to the working
    // directory, as for every other command (`mesh status --data-dir d` finds what `mesh start` made)
    dataDir: opts.dataDir === undefined ? undefined : resolvePath(opts.cwd, opts.dataDir),
    listen: opts.listen,
    dial: opts.dial,
    ...extra,
  }
}
