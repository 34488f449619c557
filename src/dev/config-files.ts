/** The files a `mesh dev` session watches, and their content hashes (a save without changes reloads nothing). */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { CONFIG_SEARCH_PLACES, type LoadedConfig } from 'meshkit'

/** The sha256 of each file's content ('missing' for a file that cannot be read). */
export async function hashFiles(files: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  await Promise.all(
    files.map(async (file) => {
      const content = await readFile(file).catch(() => undefined)
      out.set(file, content ? createHash('sha256').update(content).digest('hex') : 'missing')
    }),
  )
  return out
}

/** Files named in an error's `(at file:line:col)` locations, absolute. */
export function filesInError(text: string, cwd: string): string[] {
  return [...text.matchAll(/\(at (.+?):\d+:\d+\)/g)].map((m) => resolve(cwd, m[1]))
}

/**
 * What to watch for a loaded config: its file and every local file it was built from, plus `extra`;
 * without a config file, the explicit one (`configFile`) or every place a config may appear.
 */
export function watchSetOf(
  loaded: LoadedConfig,
  where: { cwd: string; configFile?: string },
  extra: readonly string[] = [],
): string[] {
  const files = new Set([...loaded.dependencies, ...extra])
  if (loaded.file) files.add(loaded.file)
  else if (where.configFile) files.add(resolve(where.cwd, where.configFile))
  else for (const place of CONFIG_SEARCH_PLACES) files.add(resolve(where.cwd, place))
  return [...files]
}
