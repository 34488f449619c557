import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

function sources(dir: string): string[] {
  return readdirSync(join(root, dir)).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(join(root, path)).isDirectory()) return sources(path)
    return path.endsWith('.ts') ? [path] : []
  })
}

function importsOf(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8')
  return [
    ...text.matchAll(
      /^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm,
    ),
  ].map((m) => m[1] ?? m[2])
}

describe('architecture rules', () => {
  it('src/core knows no built-in plugin', () => {
    const plugins = readdirSync(join(root, 'plugins')).filter((n) =>
      statSync(join(root, 'plugins', n)).isDirectory(),
    )
    expect(plugins.length).to.be.greaterThan(3)
    for (const file of sources('src/core')) {
      for (const spec of importsOf(file)) {
        expect(spec, `${file} imports ${spec}`).not.to.match(/plugins/)
        expect(spec, `${file} imports ${spec}`).not.to.match(/^meshkit/)
      }
    }
  })

  it('built-in plugins import only the public API of core and never each other', () => {
    for (const file of sources('plugins')) {
      const folder = relative('plugins', dirname(file))
      for (const spec of importsOf(file)) {
        if (spec.startsWith('.')) {
          // plugins/index.ts aggregates the folders; a plugin folder may import its own files only
          const target = join(dirname(file), spec)
          const ok =
            folder === ''
              ? /^plugins\/[\w-]+\/index\.js$/.test(target)
              : target.startsWith(join('plugins', folder))
          expect(ok, `${file} imports ${spec}`).to.equal(true)
        } else {
          expect(spec, `${file} imports ${spec}`).not.to.match(/src\/|^meshkit\/(?!$)/)
        }
      }
    }
  })

  it('test fixture plugins use the public API only', () => {
    for (const file of sources('test/fixtures/plugins')) {
      for (const spec of importsOf(file)) expect(spec, `${file} imports ${spec}`).not.to.match(/^\.|src\//)
    }
  })

  it('tsyringe stays behind the kernel', () => {
    const users = [...sources('src'), ...sources('plugins')].filter((f) => importsOf(f).includes('tsyringe'))
    expect(users.every((f) => f.startsWith('src/core/'))).to.equal(true, users.join(', '))
  })
})
