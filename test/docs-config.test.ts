import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import type { z } from 'meshkit'
import { builtinPlugins } from 'meshkit/plugins'
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
