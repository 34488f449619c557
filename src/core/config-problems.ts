/**
 * Config problems: where, what was there, what was expected and how to fix it; made from zod issues
 * (with "did you mean" for unknown keys and the default named in the fix) and rendered for
 * MESH_ERR_CONFIG_INVALID.
 */
import type { z } from 'zod'
import { FIELD_HINTS, type IssueParams } from './config-schema.js'
import { didYouMean } from './did-you-mean.js'
import { knownKeysAt, schemaAt } from './schema-walk.js'

/** One validation problem: where, what was there, what was expected, how to fix it. */
export interface ConfigProblem {
  path: string
  value: unknown
  expected: string
  hint?: string
  /** A whole sentence that replaces "got ...; expected ..." (a plugin's own check of the config). */
  message?: string
}

const MAX_VALUE_LENGTH = 60

/** Renders a value for an error message: short, typed, never a dump. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing (undefined)'
  if (value === null) return 'null'
  if (typeof value === 'function') {
    const pluginName = (value as { pluginName?: unknown }).pluginName
    if (typeof pluginName === 'string') return `the plugin factory ${pluginName}, not called`
    return `a function${value.name ? ` (${value.name})` : ''}`
  }
  if (Array.isArray(value)) return `an array of ${value.length}`
  let text: string
  try {
    text = JSON.stringify(value) ?? String(value)
  } catch {
    text = String(value)
  }
  if (text.length > MAX_VALUE_LENGTH) text = `${text.slice(0, MAX_VALUE_LENGTH)}…`
  return `${text} (${typeof value})`
}

function pathText(path: readonly PropertyKey[]): string {
  let out = ''
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`
    else out += out ? `.${String(key)}` : String(key)
  }
  return out
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let cur = root
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return undefined
    cur = (cur as Record<PropertyKey, unknown>)[key]
  }
  return cur
}

const TYPE_NAMES: Record<string, string> = {
  object: 'an object',
  array: 'an array',
  int: 'a whole number',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  bigint: 'a bigint',
  undefined: 'nothing (leave it out)',
  null: 'null',
  function: 'a function',
  date: 'a date',
}

function count(n: number | bigint, one: string, many: string): string {
  return `${n} ${Number(n) === 1 ? one : many}`
}

function expectedOf(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return TYPE_NAMES[issue.expected] ?? `a value of type ${issue.expected}`
    case 'too_small': {
      const least = (issue as { exact?: boolean }).exact ? 'exactly' : 'at least'
      if (issue.origin === 'string') {
        if (least === 'at least' && Number(issue.minimum) <= 1) return 'a non-empty string'
        return `a string of ${least} ${count(issue.minimum, 'character', 'characters')}`
      }
      if (issue.origin === 'array' || issue.origin === 'set')
        return `${least} ${count(issue.minimum, 'entry', 'entries')}`
      return `a number ${issue.inclusive ? '>=' : '>'} ${issue.minimum}`
    }
    case 'too_big': {
      const most = (issue as { exact?: boolean }).exact ? 'exactly' : 'at most'
      if (issue.origin === 'string')
        return `a string of ${most} ${count(issue.maximum, 'character', 'characters')}`
      if (issue.origin === 'array' || issue.origin === 'set')
        return `${most} ${count(issue.maximum, 'entry', 'entries')}`
      return `a number ${issue.inclusive ? '<=' : '<'} ${issue.maximum}`
    }
    case 'invalid_value':
      return issue.values.length === 1
        ? `exactly ${JSON.stringify(issue.values[0])}`
        : `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`
    case 'invalid_format':
      return `a string in ${issue.format} format`
    case 'not_multiple_of':
      return `a multiple of ${issue.divisor}`
    case 'invalid_union': {
      // One form per union member, from the first thing each member found wrong.
      const forms = issue.errors
        .map((branch) => branch[0])
        .filter((first): first is z.core.$ZodIssue => first !== undefined)
        .map((first) =>
          first.path.length === 0
            ? expectedOf(first)
            : `an object whose ${pathText(first.path)} is ${expectedOf(first)}`,
        )
      const unique = [...new Set(forms)]
      return unique.length > 0 ? unique.join(' or ') : issue.message
    }
    case 'custom':
      return (issue.params as IssueParams | undefined)?.expected ?? issue.message
    default:
      return issue.message
  }
}

/** `'300'` where a number belongs: the hint is to drop the quotes. */
function quotedNumberHint(issue: z.core.$ZodIssue, value: unknown): string | undefined {
  if (issue.code !== 'invalid_type' || (issue.expected !== 'number' && issue.expected !== 'int'))
    return undefined
  if (typeof value !== 'string' || value.trim() === '' || !Number.isFinite(Number(value))) return undefined
  return `write the number without quotes: ${Number(value)}`
}

/** A fix for an issue that has no field-specific hint: what to write, or that the default is there. */
function genericHint(
  issue: z.core.$ZodIssue,
  value: unknown,
  expected: string,
  fallback: { value: unknown } | undefined,
  isPluginOptions: boolean,
): string {
  if (isPluginOptions) return `pass the plugin its options as ${expected}`
  if (issue.code === 'invalid_type' && value === undefined) return `add it: it is required (${expected})`
  if (fallback === undefined || fallback.value === undefined) return `change it to ${expected}`
  let text = JSON.stringify(fallback.value) ?? String(fallback.value)
  if (text.length > MAX_VALUE_LENGTH) text = `${text.slice(0, MAX_VALUE_LENGTH)}…`
  return `change it to ${expected}, or remove it to use the default (${text})`
}

/** Turns zod issues into problems, expanding unknown keys with "did you mean". */
export function problemsFromZod(
  issues: readonly z.core.$ZodIssue[],
  schema: z.ZodType,
  input: unknown,
  prefix = '',
): ConfigProblem[] {
  const at = (path: readonly PropertyKey[]): string => {
    const rest = pathText(path)
    if (!prefix || !rest) return prefix + rest
    return rest.startsWith('[') ? prefix + rest : `${prefix}.${rest}`
  }
  const problems: ConfigProblem[] = []
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeysAt(schema, issue.path)
      for (const key of issue.keys) {
        const guess = didYouMean(key, known)
        problems.push({
          path: at([...issue.path, key]),
          value: valueAt(input, [...issue.path, key]),
          expected: known.length > 0 ? `no such key (known keys: ${known.join(', ')})` : 'no such key',
          hint: guess ? `did you mean '${guess}'?` : 'remove it',
        })
      }
      continue
    }
    const value = valueAt(input, issue.path)
    const expected = expectedOf(issue)
    const params = issue.code === 'custom' ? (issue.params as IssueParams | undefined) : undefined
    // Field hints describe the core config; a plugin's option of the same name is another field.
    const fieldHint = prefix ? undefined : FIELD_HINTS[pathText(issue.path)]
    const hint =
      params?.hint ??
      quotedNumberHint(issue, value) ??
      fieldHint ??
      genericHint(
        issue,
        value,
        expected,
        schemaAt(schema, issue.path).fallback,
        prefix !== '' && issue.path.length === 0,
      )
    problems.push({ path: at(issue.path), value, expected, hint })
  }
  return problems
}

export function formatProblems(problems: readonly ConfigProblem[]): string {
  return problems
    .map((p) => {
      const head = p.message
        ? `  - ${p.path || '(config)'}: ${p.message}`
        : `  - ${p.path || '(config)'}: got ${describeValue(p.value)}; expected ${p.expected}.`
      return p.hint ? `${head}\n    Fix: ${p.hint}` : head
    })
    .join('\n')
}
