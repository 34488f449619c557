/** Where in the config's files something is: file labels, source excerpts, frames of thrown errors. */
import { dirname, isAbsolute, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** How a file is named in messages: relative to `cwd` when inside it, else absolute. */
export function labelFor(file: string, cwd: string): string {
  const rel = relative(cwd, file)
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file
}

/** A source line and a caret under `column` (0-based), indented for an error message. */
export function excerpt(lineText: string, column: number): string {
  return `\n    ${lineText}\n    ${' '.repeat(Math.max(0, column))}^`
}

/**
 * What {@link injectFileUrls} puts in front of line 1 of a bundled file. It stays on line 1 so that
 * line numbers are unchanged; columns on line 1 are corrected by its length where they are reported.
 */
export function fileHeader(path: string): string {
  return (
    `const __meshkit_url = ${JSON.stringify(pathToFileURL(path).href)};` +
    `const __meshkit_dirname = ${JSON.stringify(dirname(path))};` +
    `const __meshkit_filename = ${JSON.stringify(path)};`
  )
}

/** Where in the config's own files (source-mapped) `err` was thrown, as `file:line:col`. */
export function thrownAt(err: unknown, files: readonly string[], cwd: string): string | undefined {
  const stack = err instanceof Error && typeof err.stack === 'string' ? err.stack : ''
  for (const frame of stack.split('\n').slice(1)) {
    const match = /^\s*at (?:.*? \()?(.+?):(\d+):(\d+)\)?$/.exec(frame)
    if (!match) continue
    let file = match[1]
    if (file.startsWith('file://')) file = fileURLToPath(file)
    if (!files.includes(file)) continue
    const line = Number(match[2])
    let column = Number(match[3])
    const header = fileHeader(file).length
    if (line === 1 && column > header) column -= header
    return `${labelFor(file, cwd)}:${line}:${column}`
  }
  return undefined
}
