import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** What `mesh init` knows about a template besides its files. */
export interface TemplateInfo {
  name: string
  description: string
  /** Commands to run in the new project once it is installed. */
  run: string[]
}

/** The built-in templates, in the order `mesh init --help` lists them. */
export const TEMPLATE_INFO: readonly TemplateInfo[] = [
  { name: 'basic', description: 'a node that joins a topic', run: ['npx mesh start'] },
  {
    name: 'relay',
    description: 'a public bootstrap + circuit relay + NAT probe + STUN server node',
    run: ['npx mesh start'],
  },
  {
    name: 'nat',
    description: 'a node behind a NAT: classification, relay reservation and hole punching against a relay',
    run: ['MESH_RELAY=<the relay node`s address> npx mesh start'],
  },
  {
    name: 'chat',
    description: 'a terminal chat between the peers of a topic (its own plugin)',
    // two terminals on this machine; README.md explains the internet setup
    run: [
      'npm run chat:local -- --name alice',
      'npm run chat:local -- --name bob --dial <address alice prints>',
    ],
  },
  {
    name: 'plugin',
    description: 'a package implementing a custom plugin, with its own tests',
    run: ['npm test', 'npm run build'],
  },
]

/**
 * The folder holding the templates: `templates/` at the package root, seen from the compiled
 * `dist/src/init/templates.js` (in the repository and in the published package alike).
 */
export function templatesDir(): string {
  return fileURLToPath(new URL('../../../templates/', import.meta.url))
}

/** The templates available in `dir` (each a folder), known ones first in their order. */
export function listTemplates(dir: string = templatesDir()): string[] {
  let names: string[]
  try {
    names = readdirSync(dir).filter((n) => statSync(join(dir, n)).isDirectory())
  } catch {
    return []
  }
  const order = TEMPLATE_INFO.map((t) => t.name)
  const rank = (n: string) => (order.includes(n) ? order.indexOf(n) : order.length)
  return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
}

/** The info of a template (a generic one for a folder with no entry in TEMPLATE_INFO). */
export function templateInfo(name: string): TemplateInfo {
  return TEMPLATE_INFO.find((t) => t.name === name) ?? { name, description: '', run: ['npm start'] }
}
