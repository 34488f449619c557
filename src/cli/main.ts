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
// Everything is stopped by now; libp2p's native handles (QUIC sockets) must not delay the exit.
// stdout/stderr writes to pipes, files and TTYs are synchronous on Linux, so nothing is lost.
process.exit(code)
