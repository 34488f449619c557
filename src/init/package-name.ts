import { builtinModules } from 'node:module'

/** The longest npm package name (npm's rule). */
const MAX_LENGTH = 214
const RESERVED = new Set(['node_modules', 'favicon.ico'])
const SCOPED = /^@([^/]+)\/([^/]+)$/

/**
 * npm's rules for a new package's name (those of `validate-npm-package-name`): at most 214
 * characters, lowercase, URL-safe (a scope `@scope/name` allowed), no leading `.` or `_`, no spaces,
 * none of `~'!()*`, not a Node.js core module name and not `node_modules` or `favicon.ico`.
 *
 * @returns the problems, empty when `name` is valid
 */
export function packageNameProblems(name: string): string[] {
  const problems: string[] = []
  if (name.length === 0) return ['it is empty']
  if (name.length > MAX_LENGTH) problems.push(`it is longer than ${MAX_LENGTH} characters`)
  if (name.trim() !== name) problems.push('it has leading or trailing spaces')
  if (/^[._]/.test(name)) problems.push('it starts with "." or "_"')
  if (name.toLowerCase() !== name) problems.push('it has uppercase letters')
  if (/[~'!()*]/.test(name)) problems.push("it has one of the characters ~'!()*")
  if (/\s/.test(name)) problems.push('it has spaces')
  if (RESERVED.has(name.toLowerCase())) problems.push(`"${name}" is reserved`)
  if (builtinModules.includes(name.toLowerCase()) || name.startsWith('node:')) {
    problems.push(`"${name}" is a Node.js core module name`)
  }
  const scoped = SCOPED.exec(name)
  const parts = scoped ? [scoped[1], scoped[2]] : [name]
  if (!scoped && name.includes('/')) problems.push('it has a "/" (only "@scope/name" may)')
  else if (parts.some((p) => encodeURIComponent(p) !== p) && !problems.includes('it has spaces')) {
    problems.push('it has characters that are not URL-safe (use letters, digits, "-", "." and "_")')
  }
  if (scoped && /^[._]/.test(scoped[2])) problems.push('its name after the scope starts with "." or "_"')
  return problems
}

/** A valid package name close to `name` (lowercased, unsafe characters replaced by `-`). */
export function suggestPackageName(name: string): string {
  const fixed = name
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9._~-]+/g, '-')
    .replace(/[~]/g, '-')
    .replace(/^[._-]+/, '')
    .replace(/-+$/, '')
    .replace(/-{2,}/g, '-')
    .slice(0, MAX_LENGTH)
  if (fixed.length === 0) return 'meshkit-app'
  return packageNameProblems(fixed).length === 0 ? fixed : `${fixed}-app`
}
