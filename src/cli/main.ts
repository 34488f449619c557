#!/usr/bin/env node
const [major] = process.versions.node.split('.').map(Number)
if (major < 22) {
  process.stderr.write(
    `mesh needs Node.js >= 22 (this is ${process.version}). Run it through npm (npx mesh, npm run ...), which uses the Node 24 pinned in devDependencies.\n`,
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
