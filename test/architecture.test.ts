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

/** Most lines a source file may have unless its first comment block says why (`Size: ...`). */
const MAX_LINES = 400

/**
 * Files over {@link MAX_LINES} still to be split (issue 14): none left. A file over the limit states why
 * at its top (`Size: ...`) or is split; this list stays for a split that must wait, and only shrinks.
 */
const TO_BE_SPLIT = new Set<string>([])

/** Lines as `wc -l` counts them (a last line without a newline counts too). */
function lineCount(text: string): number {
  if (text === '') return 0
  return text.split('\n').length - (text.endsWith('\n') ? 1 : 0)
}

/**
 * The reason a file gives for its size: a line starting with `Size:` in its first comment block (the
 * comments before any code), or undefined.
 */
function sizeReason(text: string): string | undefined {
  const head = /^(?:#![^\n]*\n)?\s*((?:\/\*[\s\S]*?\*\/\s*|\/\/[^\n]*\n\s*)+)/.exec(text)?.[1] ?? ''
  for (const line of head.split('\n')) {
    const reason = /^\s*(?:\/\*\*?|\*|\/\/)?\s*Size:\s*(\S.*?)\s*(?:\*\/)?$/.exec(line)?.[1]
    if (reason && reason.length >= 10) return reason
  }
  return undefined
}

/** Folders of the apps built on the library: they reach core through its public entry, 'meshkit'. */
const APP_FOLDERS = ['src/cli', 'src/control', 'src/dev', 'src/demo', 'src/init', 'src/dashboard']

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

  it("built-in plugins import only 'meshkit/plugin' (+ their own files and npm packages), never each other", () => {
    let plugin = 0
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
        } else if (folder === '') {
          // plugins/index.ts (`meshkit/plugins`: the registry and the default config) is an app-side file
          expect(spec, `${file} imports ${spec}`).to.match(/^meshkit(\/plugin)?$/)
        } else {
          expect(spec, `${file} imports ${spec}`).not.to.match(/src\/|^meshkit(?!\/plugin$)/)
          if (spec === 'meshkit/plugin') plugin++
        }
      }
    }
    expect(plugin, "built-in plugins import 'meshkit/plugin'").to.be.greaterThan(20)
  })

  it("test fixture plugins import only 'meshkit/plugin' (+ npm packages)", () => {
    const files = sources('test/fixtures/plugins')
    expect(files.length).to.be.greaterThan(0)
    for (const file of files) {
      for (const spec of importsOf(file))
        expect(spec, `${file} imports ${spec}`).not.to.match(/^\.|src\/|^meshkit(?!\/plugin$)/)
    }
  })

  it('the shared contracts (src/contracts) sit on the public core API; the kernel knows none of them', () => {
    for (const file of sources('src/contracts')) {
      for (const spec of importsOf(file)) {
        const target = spec.startsWith('.') ? join(dirname(file), spec) : spec
        const ok =
          target === 'src/core/index.js' || target.startsWith('src/contracts/') || !spec.startsWith('.')
        expect(ok, `${file} imports ${spec}`).to.equal(true)
        expect(spec, `${file} imports ${spec}`).not.to.match(/^meshkit|plugins/)
      }
    }
    for (const file of sources('src/core')) {
      for (const spec of importsOf(file)) expect(spec, `${file} imports ${spec}`).not.to.match(/contracts/)
    }
  })

  it('the entry points export no kernel internals', async () => {
    const app = await import('meshkit')
    const plugin = await import('meshkit/plugin')
    const internals = [
      'TOKENS',
      'capabilityToken',
      'orderPlugins',
      'combineGaters',
      'findConfigModule',
      'importConfigModule',
      'checkPortClashes',
      'isMeshPlugin',
      'MULTI_PROVIDER_CAPABILITIES',
      'REQUIRED_CAPABILITIES',
      'optionalApi',
    ]
    for (const name of internals) {
      expect(app, `meshkit exports ${name}`).not.to.have.property(name)
      expect(plugin, `meshkit/plugin exports ${name}`).not.to.have.property(name)
    }
    // the plugin author's API is in 'meshkit/plugin', the app's in 'meshkit'
    for (const name of [
      'definePlugin',
      'defineErrors',
      'LruMap',
      'TokenBucket',
      'connectionMethod',
      'NAT_TYPES',
    ])
      expect(plugin, `meshkit/plugin exports ${name}`).to.have.property(name)
    for (const name of ['defineConfig', 'startMesh', 'MeshKernel', 'loadConfig', 'connectionMethod'])
      expect(app, `meshkit exports ${name}`).to.have.property(name)
    expect(app).not.to.have.property('definePlugin')
  })

  it(`no source file is over ${MAX_LINES} lines unless it says why (a 'Size:' line in its first comment)`, () => {
    const files = [...sources('src'), ...sources('plugins')]
    expect(files.length).to.be.greaterThan(100)
    const over = files.filter((file) => {
      const text = readFileSync(join(root, file), 'utf8')
      return lineCount(text) > MAX_LINES && !TO_BE_SPLIT.has(file) && sizeReason(text) === undefined
    })
    expect(over, `split these files, or state why they are one at their top ('Size: ...')`).to.deep.equal([])
  })

  it('the list of files still to be split names only files still over the limit', () => {
    const done = [...TO_BE_SPLIT].filter((file) => {
      let text: string
      try {
        text = readFileSync(join(root, file), 'utf8')
      } catch {
        return true
      }
      return lineCount(text) <= MAX_LINES
    })
    expect(done, 'remove these from TO_BE_SPLIT in test/architecture.test.ts').to.deep.equal([])
  })

  it("finds a file's size reason in its first comment block only", () => {
    const reason = 'one state machine: the steps of a punch share every variable'
    expect(sizeReason(`/**\n * The punch.\n *\n * Size: ${reason}.\n */\nexport const x = 1\n`)).to.equal(
      `${reason}.`,
    )
    expect(sizeReason(`// Size: ${reason}\nexport const x = 1\n`)).to.equal(reason)
    expect(sizeReason(`#!/usr/bin/env node\n/* Size: ${reason} */\n`)).to.equal(reason)
    // not in the first comment block, or no reason given
    expect(sizeReason(`import 'x'\n/** Size: ${reason} */\n`)).to.equal(undefined)
    expect(sizeReason('/**\n * Size:\n */\n')).to.equal(undefined)
    expect(sizeReason('export const x = 1\n')).to.equal(undefined)
    expect(lineCount('a\nb\n')).to.equal(2)
    expect(lineCount('a\nb')).to.equal(2)
  })

  it("the apps reach core only through its public entry points ('meshkit', 'meshkit/plugin'), never '../core/...'", () => {
    const files = APP_FOLDERS.flatMap((dir) => sources(dir))
    expect(files.length).to.be.greaterThan(30)
    for (const file of files) {
      for (const spec of importsOf(file)) {
        const target = spec.startsWith('.') ? join(dirname(file), spec) : spec
        expect(target, `${file} imports ${spec}`).not.to.match(
          /^src\/(core|contracts)(\/|$)|^src\/(index|plugin)\.js$|^meshkit\/(?!plugins?$)/,
        )
      }
    }
  })

  it('no container outside the kernel: tsyringe, the DI tokens and a resolve() stay in src/core', () => {
    const files = [...sources('src'), ...sources('plugins'), ...sources('test/fixtures')]
    const users = files.filter((f) => importsOf(f).includes('tsyringe'))
    expect(users.every((f) => f.startsWith('src/core/'))).to.equal(true, users.join(', '))
    for (const file of files.filter((f) => !f.startsWith('src/core/'))) {
      const text = readFileSync(join(root, file), 'utf8')
      for (const spec of importsOf(file))
        expect(spec, `${file} imports ${spec}`).not.to.match(/core\/(tokens|plugin-slot|plugin-context)\.js$/)
      expect(
        /\b(TOKENS|capabilityToken)\b|\bctx\.resolve\(/.test(text),
        `${file} reaches the container`,
      ).to.equal(false)
    }
  })
})
