// The npm registry reachable here has no macOS/Windows/arm builds of @chainsafe/libp2p-quic, so
// `npm install` leaves their optional-dependency entries out of package-lock.json and `npm ci` then
// refuses the lock ("Missing ... from lock file"). This adds them as skipped optional entries (they
// never install on linux-x64). Run after every `npm install`: node .ci/fix-lock.mjs
import { readFileSync, writeFileSync } from 'node:fs'

const file = new URL('../package-lock.json', import.meta.url)
const lock = JSON.parse(readFileSync(file, 'utf8'))
const platforms = {
  'darwin-arm64': ['darwin', 'arm64'],
  'darwin-x64': ['darwin', 'x64'],
  'linux-arm64-gnu': ['linux', 'arm64', 'glibc'],
  'linux-arm64-musl': ['linux', 'arm64', 'musl'],
  'linux-x64-gnu': ['linux', 'x64', 'glibc'],
  'linux-x64-musl': ['linux', 'x64', 'musl'],
  'win32-x64-msvc': ['win32', 'x64'],
}
let added = 0
for (const [path, entry] of Object.entries(lock.packages)) {
  const optional = entry.optionalDependencies ?? {}
  for (const [name, version] of Object.entries(optional)) {
    const flat = `node_modules/${name}`
    if (lock.packages[flat] || lock.packages[`${path}/${flat}`]) continue
    const suffix = Object.keys(platforms).find((p) => name.endsWith(`-${p}`))
    if (!suffix) continue
    const [os, cpu, libc] = platforms[suffix]
    lock.packages[flat] = { version, optional: true, os: [os], cpu: [cpu], ...(libc ? { libc: [libc] } : {}) }
    added++
  }
}
lock.packages = Object.fromEntries(
  Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1)),
)
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`)
console.log(`fix-lock: added ${added} platform entries`)
