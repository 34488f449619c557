#!/usr/bin/env node
const [major] = process.versions.node.split('.').map(Number)
if (major < 22) {
  process.stderr.write(
    `mesh needs Node.js >= 22 (this is ${process.version}). Run it through npm (npx mesh, npm run ...), which uses the Node 24 pinned in devDependencies.\n`,
  )
  process.exit(2)
}

const { runCli } = await import('./run-cli.js')
const code = await runCli(process.argv.slice(2))
process.exitCode = code
// libp2p may hold sockets or timers for a moment after stop; they must not delay the exit.
setTimeout(() => process.exit(code), 200).unref()
