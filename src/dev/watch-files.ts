import { type FSWatcher, watch } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'

/** Watches a set of files (which may not exist yet) for changes; the set can be replaced at any time. */
export interface FileWatcher {
  /** The files watched now (absolute). */
  readonly files: readonly string[]
  /** Replaces the watched set. */
  update(files: Iterable<string>): void
  close(): void
}

/**
 * Watches files through their directories (`fs.watch` on each directory): an editor that saves by
 * writing a temp file and renaming it over the original replaces the file's inode, which a watch on
 * the file itself would lose. `onChange` gets the absolute path of each watched file that changed.
 * A directory that cannot be watched (e.g. it does not exist) is skipped; `onError` hears why.
 */
export function watchFiles(
  initial: Iterable<string>,
  onChange: (file: string) => void,
  onError: (err: unknown, dir: string) => void = () => {},
): FileWatcher {
  let files = new Set<string>()
  const watchers = new Map<string, FSWatcher>()
  let closed = false

  const update = (next: Iterable<string>) => {
    if (closed) return
    files = new Set([...next].map((f) => resolve(f)))
    const dirs = new Set([...files].map((f) => dirname(f)))
    for (const [dir, watcher] of watchers) {
      if (!dirs.has(dir)) {
        watcher.close()
        watchers.delete(dir)
      }
    }
    for (const dir of dirs) {
      if (watchers.has(dir)) continue
      try {
        const watcher = watch(dir, { persistent: false }, (_event, filename) => {
          if (closed) return
          if (filename === null) {
            // the platform did not say which file: every watched file of the directory may have changed
            for (const file of files) if (dirname(file) === dir) onChange(file)
            return
          }
          const file = resolve(dir, filename.toString())
          if (files.has(file)) onChange(file)
        })
        watcher.on('error', (err) => onError(err, dir))
        watchers.set(dir, watcher)
      } catch (err) {
        onError(err, dir)
      }
    }
  }

  update(initial)
  return {
    get files() {
      return [...files]
    },
    update,
    close() {
      closed = true
      for (const watcher of watchers.values()) watcher.close()
      watchers.clear()
    },
  }
}

/** A file name for messages: relative to `cwd` when inside it. */
export function fileLabel(file: string, cwd: string): string {
  const abs = resolve(file)
  const base = resolve(cwd)
  return abs.startsWith(`${base}/`) ? abs.slice(base.length + 1) : abs === base ? basename(abs) : abs
}
