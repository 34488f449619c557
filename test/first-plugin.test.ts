/**
 * The "write your first plugin" example of docs/architecture.md: the docs show the fixture file verbatim,
 * it imports only 'meshkit/plugin', and it works on two real loopback nodes.
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { isMeshError, type MeshEvent, type MeshPlugin } from 'meshkit'
import { identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { LoopbackNodes } from './fixtures/loopback-nodes.js'
import { type HelloApi, hello } from './fixtures/plugins/first-plugin.js'
import { tempDir, waitFor } from './helpers.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

describe('write your first plugin (docs/architecture.md)', () => {
  let nodes: LoopbackNodes
  let dir = ''
  let cleanup: () => Promise<void> = async () => {}

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-first-plugin-'))
    nodes = new LoopbackNodes(
      () => dir,
      (): MeshPlugin[] => [identify(), ping(), noise(), yamux(), tcp()],
    )
  })
  afterEach(async () => {
    await nodes.closeAll()
    await cleanup()
  })

  it('the docs show the example verbatim, and it imports only meshkit/plugin', () => {
    const source = readFileSync(join(root, 'test/fixtures/plugins/first-plugin.ts'), 'utf8')
    const docs = readFileSync(join(root, 'docs/architecture.md'), 'utf8')
    const section = docs.slice(docs.indexOf('## Write your first plugin'))
    const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
    // the docs leave out the file's first comment lines (which point here)
    expect(block, 'the first ts block of the section').to.equal(source.replace(/^(\/\/[^\n]*\n)+/, ''))
    const specs = [...source.matchAll(/from\s+'([^']+)'/g)].map((m) => m[1])
    expect(specs).to.deep.equal(['meshkit/plugin'])
  })

  it('two nodes greet each other; a wrong call is a coded error with a fix', async () => {
    const a = await nodes.start('a', { plugins: [hello({ greeting: 'hi from a' })] })
    const b = await nodes.start('b', { plugins: [hello()], dial: [a.address] })
    await waitFor(() => b.node.libp2p.getPeers().length === 1, { what: 'b connected to a' })
    const greeted: MeshEvent[] = []
    a.kernel.events.on('hello:greeted', (e) => greeted.push(e))
    expect(await b.node.api<HelloApi>('hello').hello(a.peerId)).to.equal('hi from a')
    expect(await a.node.api<HelloApi>('hello').hello(b.peerId)).to.equal('hello')
    expect(greeted.map((e) => [e.peer, e.greeting])).to.deep.equal([[b.peerId, 'hello']])
    const err = await b.node
      .api<HelloApi>('hello')
      .hello('12D3KooWnobody')
      .catch((e: unknown) => e)
    expect(isMeshError(err, 'HELLO_ERR_NOT_CONNECTED'), String(err)).to.equal(true)
    expect(isMeshError(err) && err.hint).to.match(/getPeers/)
  })

  it('its options are validated with the config', async () => {
    const err = await nodes.start('c', { plugins: [hello({ greeting: '' })] }).catch((e: unknown) => e)
    expect(isMeshError(err, 'MESH_ERR_CONFIG_INVALID'), String(err)).to.equal(true)
    expect(String((err as Error).message)).to.match(/hello\)\.greeting/)
  })
})
