import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import type { z } from 'meshkit'
import { parseDuration } from 'meshkit'
import { builtinPlugins } from 'meshkit/plugins'
import { CORE_DEFAULTS } from '../src/core/config-defaults.js'
import { coreConfigSchema } from '../src/core/config-schema.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const doc = readFileSync(join(root, 'docs', 'config.md'), 'utf8')

type Def = { type: string; innerType?: z.ZodType; in?: z.ZodType; shape?: Record<string, z.ZodType> }
const defOf = (schema: z.ZodType) => (schema as unknown as { _zod: { def: Def } })._zod.def

/** The object schema under defaults, optionals and pipes, if there is one. */
function objectShape(schema: z.ZodType): Record<string, z.ZodType> | undefined {
  let s = schema
  for (let i = 0; i < 10; i++) {
    const def = defOf(s)
    if (def.type === 'object') return def.shape
    const next = def.innerType ?? def.in
    if (!next) return undefined
    s = next
  }
  return undefined
}

/** The part of the doc under the `### ...` heading that names the plugin (`(name)` or `name()`). */
function sectionOf(pluginName: string): string | undefined {
  const sections = doc.split(/^### /m).slice(1)
  return sections.find((s) => {
    const heading = s.split('\n', 1)[0] ?? ''
    return heading.includes(`(\`${pluginName}\`)`)
  })
}

/** A default as written in docs or JSDoc (`300`, `'10s'`, `[]`, `false`, `'public'`), as resolved. */
function readDefault(text: string, resolved: unknown): unknown {
  const t = text.trim().replace(/^`|`$/g, '')
  if (t === '[]') return []
  if (t === 'true' || t === 'false') return t === 'true'
  if (/^-?[\d_]+$/.test(t)) return Number(t.replaceAll('_', ''))
  const quoted = /^'(.*)'$/.exec(t)?.[1]
  if (quoted === undefined) return `unreadable: ${t}`
  // a duration where the resolved value is ms
  return typeof resolved === 'number' ? parseDuration(quoted) : quoted
}

/** The core defaults as [dotted key, value] (sections one level deep). */
const coreDefaults = (): Array<[string, unknown]> =>
  Object.entries(CORE_DEFAULTS).flatMap(([key, value]) =>
    value !== null && typeof value === 'object' && !Array.isArray(value)
      ? Object.entries(value).map(([k, v]): [string, unknown] => [`${key}.${k}`, v])
      : [[key, value]],
  )

describe('core defaults are written once (config-defaults.ts); the docs say the same', () => {
  it('docs/config.md gives every core default as CORE_DEFAULTS has it', () => {
    const wrong: string[] = []
    for (const [key, value] of coreDefaults()) {
      const row = doc.split('\n').find((l) => l.startsWith(`| \`${key}\``))
      const cell = row?.split(/(?<!\\)\|/)[3]
      if (cell === undefined) wrong.push(`${key}: no row`)
      else if (JSON.stringify(readDefault(cell, value)) !== JSON.stringify(value))
        wrong.push(`${key}: docs say ${cell.trim()}, the code ${JSON.stringify(value)}`)
    }
    expect(wrong).to.deep.equal([])
  })

  it('every @default in config-types.ts (what editors show) matches CORE_DEFAULTS', () => {
    const source = readFileSync(join(root, 'src', 'core', 'config-types.ts'), 'utf8')
    const body = source.slice(source.indexOf('export interface MeshConfig'))
    const wrong: string[] = []
    let checked = 0
    for (const [key, value] of coreDefaults()) {
      const field = key.split('.').pop()!
      // the JSDoc right before `field?:` (inside its section for dotted keys)
      const from = key.includes('.') ? body.indexOf(`${key.split('.')[0]}?:`) : 0
      const at = body.indexOf(`\n  ${key.includes('.') ? '  ' : ''}${field}?:`, from)
      if (at < 0) {
        wrong.push(`${key}: no field`)
        continue
      }
      const doc = body.slice(body.lastIndexOf('/**', at), at)
      const written = /@default\s+([^*\n]+?)\s*(?:\*\/|\n)/.exec(doc)?.[1]
      if (written === undefined) {
        wrong.push(`${key}: no @default`)
        continue
      }
      checked++
      if (JSON.stringify(readDefault(written, value)) !== JSON.stringify(value))
        wrong.push(`${key}: @default ${written}, the code ${JSON.stringify(value)}`)
    }
    expect(wrong).to.deep.equal([])
    expect(checked).to.be.greaterThan(20)
  })
})

/** Each `/** ... @default X ... *\/` right before a `key:` or `key?:` in the plugin folder's sources. */
function jsdocDefaults(folder: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const file of readdirSync(folder).filter((f) => f.endsWith('.ts'))) {
    const text = readFileSync(join(folder, file), 'utf8')
    for (const m of text.matchAll(/\/\*\*((?:(?!\*\/)[\s\S])*?)\*\/\s*(\w+)\??:/g)) {
      const written = /@default\s+([^\n]+?)\s*(?:\*\/)?\s*$/m.exec(m[1].replace(/\n\s*\* ?/g, '\n'))?.[1]
      if (written === undefined) continue
      out.set(m[2], [...(out.get(m[2]) ?? []), written])
    }
  }
  return out
}

describe("built-in plugins' defaults are written once (the zod schema); their JSDoc says the same", () => {
  it('every @default next to an option field matches what the schema fills in', () => {
    const pluginsDir = join(root, 'plugins')
    const folders = readdirSync(pluginsDir, { withFileTypes: true }).filter((d) => d.isDirectory())
    const folderOf = (name: string) =>
      folders.find((d) =>
        readdirSync(join(pluginsDir, d.name))
          .filter((f) => f.endsWith('.ts'))
          .some((f) => readFileSync(join(pluginsDir, d.name, f), 'utf8').includes(`name: '${name}'`)),
      )?.name
    const wrong: string[] = []
    let checked = 0
    for (const [name, factory] of builtinPlugins) {
      const schema = factory.definition.options as z.ZodType | undefined
      const folder = folderOf(name)
      if (!schema || !folder) continue
      const parsed = schema.safeParse(undefined)
      const resolved = (parsed.success ? parsed.data : schema.safeParse({}).data) as Record<string, unknown>
      if (!resolved || typeof resolved !== 'object') continue
      const written = jsdocDefaults(join(pluginsDir, folder))
      for (const [key, value] of Object.entries(resolved)) {
        if (value === undefined) continue
        const readable = (written.get(key) ?? [])
          .map((w) => ({ w, v: readDefault(w, value) }))
          .filter(({ v }) => !String(v).startsWith('unreadable'))
        if (readable.length === 0) continue
        checked++
        if (!readable.some(({ v }) => JSON.stringify(v) === JSON.stringify(value)))
          wrong.push(
            `${name}.${key}: @default ${readable.map((r) => r.w).join(' / ')}, the schema ${JSON.stringify(value)}`,
          )
      }
    }
    expect(wrong).to.deep.equal([])
    expect(checked, 'defaults compared').to.be.greaterThan(40)
  })
})

describe('docs/config.md', () => {
  it('lists every core option', () => {
    const missing: string[] = []
    for (const [key, schema] of Object.entries(objectShape(coreConfigSchema as z.ZodType) ?? {})) {
      const nested = objectShape(schema)
      const keys = nested ? Object.keys(nested).map((k) => `${key}.${k}`) : [key]
      for (const k of keys) if (!doc.includes(`| \`${k}\``)) missing.push(k)
    }
    expect(missing, 'core options missing from docs/config.md').to.deep.equal([])
  })

  it("lists every built-in plugin's options in that plugin's section", () => {
    const missing: string[] = []
    for (const [name, factory] of builtinPlugins) {
      const schema = factory.definition.options as z.ZodType | undefined
      const keys = schema ? Object.keys(objectShape(schema) ?? {}) : []
      if (keys.length === 0) continue
      const section = sectionOf(name)
      if (!section) {
        missing.push(`${name} (no section)`)
        continue
      }
      for (const key of keys) if (!section.includes(`\`${key}\``)) missing.push(`${name}.${key}`)
    }
    expect(missing, 'plugin options missing from docs/config.md').to.deep.equal([])
  })
})
