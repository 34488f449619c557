#!/usr/bin/env node
const [major] = process.versions.node.split('.').map(Number)
// `mesh init` only copies a template and runs npm: it works on an older system Node, and the project it
// makes pins Node 24 when the system's is too old. Everything else needs libp2p 3, hence Node >= 22.
const command = process.argv[2]
const needsNoLibp2p =
  command === 'init' || command === undefined || /^(-h|--help|help|-V|--version)$/.test(command)
if (major < 22 && !(needsNoLibp2p && major >= 18)) {
  process.stderr.write(
    `mesh needs Node.js >= 22.15 (this is ${process.version}). In a Meshkit project, run it through npm (npx mesh, npm run ...): a project made by \`mesh init\` on an older system pins Node 24 in its devDependencies. Elsewhere, install Node 22.15 or later.\n`,
  )
  process.exit(2)
}

// The reader of stdout went away (`mesh demo | head`): stop as on SIGTERM (nodes closed, temp dirs
// removed) instead of dying of an unhandled EPIPE; nothing more is written to the closed pipe.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err
  if (process.exitCode === undefined) process.exitCode = 0
  if (!stdoutGone) {
    stdoutGone = true
    process.kill(process.pid, 'SIGTERM')
  }
})
let stdoutGone = false

const { runCli } = await import('./run-cli.js')
const code = await runCli(process.argv.slice(2))
// Everything is stopped by now; libp2p's native handles (QUIC sockets) must not delay the exit.
// stdout/stderr writes to pipes, files and TTYs are synchronous on Linux, so nothing is lost.
process.exit(code)
