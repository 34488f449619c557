/**
 * A process that builds a lab, starts a process in it and then ends without destroying it, in the way
 * argv[2] says: `exit` (process.exit), `throw` (an uncaught exception) or `signal` (waits to be killed by
 * SIGTERM/SIGINT). Used by lab.test.ts to check that nothing of the lab outlives its process.
 */
import { createLab } from './lab.js'

const mode = process.argv[2]
const lab = await createLab()
const site = await lab.addNatSite('port-restricted-cone')
const proc = lab.spawn(site.host, process.execPath, ['-e', 'setInterval(() => {}, 1000)'])
await new Promise((r) => setTimeout(r, 200))
process.stdout.write(`${JSON.stringify({ namespaces: lab.namespaces, pid: proc.pid })}\n`)
// never wait forever, whatever the parent does
setTimeout(() => process.exit(4), 30_000).unref()
if (mode === 'exit') process.exit(3)
else if (mode === 'throw') throw new Error('uncaught, on purpose')
else setInterval(() => {}, 1000)
