/**
 * The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core): a
 * loopback node serves its control API with `dashboard: true`; the page must show the node's peers,
 * add a peer that connects later within a bound, style every edge by its connection method (direct
 * solid, hole-punched dashed, relayed dotted), show topics, clusters, the NAT verdict and events, be usable
 * with the keyboard, and log no errors.
 * The screenshot is saved to test-results/dashboard.png (path printed).
 */
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { type RunningMesh, startMesh } from 'meshkit'
import {
  builtinPlugins,
  type GossipApi,
  gossip,
  identify,
  jaccardClusters,
  kadTopics,
  natClassifier,
  natProbeServer,
  noise,
  ping,
  tcp,
  yamux,
} from 'meshkit/plugins'
import { type BrowserContext, chromium, type Page } from 'playwright-core'
import { relayClient } from '../plugins/relay-client/index.js'
import { relayServer } from '../plugins/relay-server/index.js'
import { type ControlServer, startControlServer } from '../src/control/index.js'
import { LoopbackNodes, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

const CHROMIUM = '/usr/bin/chromium'
/** The repository root, seen from dist/test/dashboard.test.js. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const DASHBOARD_SCREENSHOT = join(ROOT, 'test-results', 'dashboard.png')
/** How long the page may take to show a peer that just connected (SSE event, then a debounced fetch). */
const UPDATE_BOUND_MS = 5_000

/** Chromium flags for this machine: headless, no sandbox (root), nothing fetched from the network. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

describe('dashboard: live graph in headless Chromium', function () {
  this.timeout(120_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  let control: ControlServer | undefined
  let browser: BrowserContext | undefined
  let page: Page
  const pageErrors: string[] = []
  let observer: TestNode
  const meshes: RunningMesh[] = []

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      console.log(
        `    skipped: ${CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium; .ci/run does)`,
      )
      this.skip()
    }
    ;({ dir, cleanup } = await tempDir('meshkit-dashboard-'))
    nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), ping(), noise(), yamux(), tcp()],
      'silent',
    )
    // two ports below the ephemeral range (as in nat-probe.test.ts), so that they are rarely taken
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const natPorts: [number, number] = [port, port + 1]
    observer = await nodes.start('observer', {
      plugins: [
        kadTopics({ addressScope: 'all', topics: ['alpha', 'beta'] }),
        gossip(),
        jaccardClusters({ tags: ['alpha', 'beta'], maintainInterval: '1s' }),
        relayClient({ minReservations: 0 }),
        // a NAT verdict for the NAT panel: the node probes itself (two loopback IPs): public
        natProbeServer({ udpPorts: natPorts, addresses: ['127.0.0.1', '127.0.0.2'] }),
        natClassifier({ servers: [`127.0.0.1:${natPorts[0]}`], localAddress: '127.0.0.1' }),
      ],
    })
    control = await startControlServer({
      kernel: observer.kernel,
      dataDir: `${dir}/observer`,
      dashboard: true,
    })
    const userDataDir = join(dir, 'chromium-profile')
    await mkdir(userDataDir)
    // a fresh profile in the test's temp dir (removed with it)
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
      headless: true,
      timeout: 30_000,
      viewport: { width: 1400, height: 950 },
    })
    page = browser.pages()[0] ?? (await browser.newPage())
    page.on('pageerror', (err) => pageErrors.push(`pageerror: ${err.message}`))
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning')
        pageErrors.push(`console.${msg.type()}: ${msg.text()}`)
    })
    page.on('requestfailed', (req) => {
      // the event stream is cut when the page closes; anything else failing is an error
      if (!req.url().includes('/api/events')) pageErrors.push(`request failed: ${req.url()}`)
    })
    page.on('response', (res) => {
      if (res.status() >= 400) pageErrors.push(`HTTP ${res.status()}: ${res.url()}`)
    })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await control?.close().catch(() => {})
    for (const m of meshes) await m.close().catch(() => {})
    await nodes?.closeAll()
    await cleanup?.()
  })

  const peerNode = (id: string) => `#graph g.node[data-peer-id="${id}"]`
  const edge = (id: string) => `#graph line.edge[data-peer-id="${id}"]`
  const peerCount = async () => Number(await page.getAttribute('#graph', 'data-peer-count'))
  /** The computed dash pattern of a peer's edge ('none' for a solid line). */
  const dashArray = (id: string): Promise<string> =>
    page.evaluate(`getComputedStyle(document.querySelector('${edge(id)}')).strokeDasharray`)
  let firstId = ''
  let secondId = ''

  it('shows the connected peers, their topics and clusters, and adds a peer that connects later', async () => {
    const first = await nodes.start('first', {
      dial: [observer.address],
      plugins: [
        kadTopics({ addressScope: 'all', topics: ['alpha'] }),
        jaccardClusters({ tags: ['alpha', 'beta'] }),
      ],
    })
    await waitFor(() => observer.node.libp2p.getPeers().length === 1, { what: 'first connected' })
    // the one-time login link the node prints (or `mesh dashboard` makes)
    const loginUrl = control!.loginUrl()
    await page.goto(loginUrl)
    await page.waitForSelector(peerNode(first.peerId), { timeout: 10_000 })
    // nothing reusable is left: not in the address bar (so not in history), not in a cookie
    expect(page.url()).to.equal(`${control!.url}/`)
    expect(await browser!.cookies()).to.deep.equal([])
    // the code was used: a second use is refused (and would end the page's session)
    const code = new URL(loginUrl).hash.slice('#code='.length)
    expect(page.url()).to.not.include(code)
    await page.waitForSelector('#live[data-state="live"]', { timeout: 10_000 })
    expect(await peerCount()).to.equal(1)
    expect(await page.textContent('#node-peer-id')).to.equal(observer.peerId)
    expect(await page.getAttribute('#graph', 'data-self-id')).to.equal(observer.peerId)

    // the page's files are public (no data in them); a name that is not one of them is a 404
    const css = await fetch(`${control!.url}/dashboard/style.css`)
    expect(css.status).to.equal(200)
    expect(css.headers.get('content-type')).to.match(/^text\/css/)
    expect((await fetch(`${control!.url}/dashboard/%2e%2e%2f%2e%2e%2fetc%2fpasswd`)).status).to.equal(404)
    expect((await fetch(`${control!.url}/dashboard/secret.js`)).status).to.equal(404)
    expect((await fetch(`${control!.url}/api/status`)).status, 'the API needs the token').to.equal(401)
    expect(
      (await fetch(`${control!.url}/api/status?token=${control!.token}`)).status,
      'never from a URL',
    ).to.equal(401)

    // a second peer connects: the page learns it from the event stream
    const connectedAt = Date.now()
    const second = await nodes.start('second', {
      dial: [observer.address],
      plugins: [
        kadTopics({ addressScope: 'all', topics: ['beta'] }),
        jaccardClusters({ tags: ['alpha', 'beta'] }),
      ],
    })
    await page.waitForSelector(peerNode(second.peerId), { timeout: UPDATE_BOUND_MS + 5_000 })
    const shownMs = Date.now() - connectedAt
    console.log(`    the new peer appeared in the graph ${shownMs} ms after it started connecting`)
    expect(shownMs).to.be.below(UPDATE_BOUND_MS + 5_000)
    await page.waitForSelector('#graph[data-peer-count="2"]', { timeout: UPDATE_BOUND_MS })
    firstId = first.peerId
    secondId = second.peerId

    // topics and clusters panels follow (topic peers once the member exchange ran)
    await page.waitForSelector(`#topics li[data-topic="alpha"] .chip[title="${first.peerId}"]`, {
      timeout: 15_000,
    })
    await page.waitForSelector(`#topics li[data-topic="beta"] .chip[title="${second.peerId}"]`, {
      timeout: 15_000,
    })
    // both peers have the observer's tags: one cluster of two members, the observer's own
    await page.waitForSelector('#clusters li[data-member-count="2"]', { timeout: 15_000 })
    expect(await page.textContent('#clusters')).to.include('(this node)')
    expect(await page.getAttribute(peerNode(first.peerId), 'data-topics')).to.equal('alpha')
    expect(await page.getAttribute(peerNode(second.peerId), 'data-topics')).to.equal('beta')
    const events = await page.$$eval('#events li', (lis) => lis.map((li) => li.getAttribute('data-event')))
    expect(events).to.include('peer:connect')
    // the NAT panel shows the classifier's verdict
    await page.waitForSelector('#nat[data-verdict="udp:public tcp:public"]', { timeout: 20_000 })
    expect(await page.textContent('#nat')).to.match(/UDPpublic \(confidence \d+%\)/)
    // the peers table lists both, for readers that skip the graph
    expect(await page.$$eval('#peers-body tr[data-peer-id]', (rows) => rows.length)).to.equal(2)
  })

  it('styles edges by method: direct solid, hole-punched dashed, relayed dotted', async () => {
    const first = firstId
    const second = secondId
    expect(await page.getAttribute(edge(first), 'data-method')).to.equal('direct')
    expect(await dashArray(first)).to.equal('none')

    // relayed: the observer reaches a peer through a relay's circuit (a limited connection)
    const relay = await nodes.start('relay', { plugins: [relayServer()] })
    // listening nowhere (as behind a NAT): reachable only through its relay reservation
    const behind = await startMesh({
      config: {
        dataDir: join(dir, 'behind'),
        datastore: 'memory',
        logLevel: 'silent',
        listen: [],
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
        plugins: [
          identify(),
          ping(),
          noise(),
          yamux(),
          tcp(),
          relayClient({ relays: [relay.address], retryInitial: '100ms', timeout: '3s' }),
        ],
      },
      registry: builtinPlugins,
    })
    meshes.push(behind)
    const behindId = behind.node.peerId.toString()
    await waitFor(
      () =>
        behind.node.libp2p
          .getMultiaddrs()
          .some((a) => a.toString().includes(`/p2p/${relay.peerId}/p2p-circuit`)),
      { timeoutMs: 15_000, what: 'a circuit address via the relay' },
    )
    const circuit = `${relay.address}/p2p-circuit/p2p/${behindId}`
    const conn = await observer.node.libp2p.dial(multiaddr(circuit), { signal: AbortSignal.timeout(10_000) })
    expect(conn.limits, 'the connection is relayed').to.not.equal(undefined)
    await page.waitForSelector(`${edge(behindId)}[data-method="relayed"]`, {
      timeout: UPDATE_BOUND_MS + 5_000,
    })
    expect(await dashArray(behindId)).to.equal('2px, 4px')
    // the relay itself is a direct peer of the observer
    await page.waitForSelector(`${edge(relay.peerId)}[data-method="direct"]`, { timeout: UPDATE_BOUND_MS })

    // hole-punched: what a hole-punching plugin reports on the bus (a `connection:method` event) for a
    // peer whose direct connection it made; the control API then reports that connection as hole-punched
    observer.kernel.events.emit('connection:method', {
      peerId: second,
      method: 'hole-punched',
      transport: 'tcp',
    })
    await page.waitForSelector(`${edge(second)}[data-method="hole-punched"]`, { timeout: UPDATE_BOUND_MS })
    expect(await dashArray(second)).to.equal('8px, 5px')

    // the legend shows the three styles
    const legend = await page.$$eval('.legend li', (lis) => lis.map((li) => li.textContent?.trim()))
    expect(legend).to.deep.equal(['direct', 'hole-punched', 'relayed'])
    await page.waitForSelector('#graph[data-peer-count="4"]', { timeout: UPDATE_BOUND_MS })
    expect(await page.getAttribute('#graph', 'data-edge-count')).to.equal('4')
  })

  it('a page on another 127.0.0.1 port cannot change the node (form, no-cors fetch, JSON fetch, beacon)', async () => {
    const target = `${control!.url}/api/topics/join`
    const attackHtml = `<!doctype html><title>evil</title>
<form id="f" method="POST" enctype="text/plain" action="${target}" target="sink"><input name='{"topic":"evil-form","x":"' value='"}'></form>
<iframe name="sink"></iframe>
<script>
  const body = JSON.stringify({ topic: 'evil-fetch' })
  fetch(${JSON.stringify(target)}, { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'Content-Type': 'text/plain' }, body }).catch(() => {})
  fetch(${JSON.stringify(target)}, { method: 'POST', credentials: 'include', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ topic: 'evil-json' }) }).catch(() => {})
  navigator.sendBeacon(${JSON.stringify(target)}, new Blob([JSON.stringify({ topic: 'evil-beacon' })], { type: 'application/json' }))
  document.getElementById('f').submit()
  setTimeout(() => { document.title = 'done' }, 1500)
</script>`
    const evil = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end(attackHtml)
    })
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r))
    const attacker = await browser!.newPage()
    /** What the control API answered to the page's requests (those that got past the browser). */
    const answers: number[] = []
    attacker.on('response', (res) => {
      if (res.url().startsWith(target)) answers.push(res.status())
    })
    const t0 = Date.now()
    try {
      await attacker.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`)
      await attacker.waitForFunction('document.title === "done"', undefined, { timeout: 10_000 })
      await attacker.waitForTimeout(500)
      console.log(`    the attacker page ran its requests in ${Date.now() - t0} ms`)
    } finally {
      await attacker.close()
      evil.closeAllConnections()
      await new Promise((r) => evil.close(r))
    }
    console.log(`    the control API answered the page: ${answers.join(', ')}`)
    expect(answers.length, 'the requests reached the control API').to.be.greaterThan(0)
    for (const status of answers) expect([403, 415]).to.include(status)
    const joined = observer.node.api<{ topics(): string[] }>('discovery').topics()
    expect(
      joined.filter((t) => t.startsWith('evil')),
      'topics the page made the node join',
    ).to.deep.equal([])
    // the attacker page's failed requests are not the dashboard's
    pageErrors.splice(0, pageErrors.length, ...pageErrors.filter((e) => !e.includes('/api/topics/join')))
  })

  it('a login link works once: a second use is refused and ends the session it opened', async () => {
    const second = await browser!.newPage()
    const third = await browser!.newPage()
    try {
      const link = control!.loginUrl()
      await second.goto(link)
      await second.waitForSelector('#live[data-state="live"]', { timeout: 10_000 })
      // someone replays the link (from the browser's command line or history)
      await third.goto(link)
      await third.waitForSelector('#error:not([hidden])', { timeout: 10_000 })
      expect(await third.textContent('#error')).to.include('mesh dashboard')
      // the first tab's session was ended: its next request is refused
      const status = await second.evaluate(async () => {
        const session = sessionStorage.getItem('meshkit-dashboard-session')
        return (await fetch('/api/status', { headers: { Authorization: `Bearer ${session}` } })).status
      })
      expect(status).to.equal(401)
    } finally {
      await second.close()
      await third.close()
    }
  })

  it('lists gossip messages in the events, with a bounded preview, as text', async () => {
    const talker = await nodes.start('talker', {
      dial: [observer.address],
      plugins: [kadTopics({ addressScope: 'all', topics: ['alpha'] }), gossip()],
    })
    const api = talker.node.api<GossipApi>('gossip')
    await waitFor(() => api.peers('alpha').includes(observer.peerId), { what: 'the observer a gossip peer' })
    // markup from a peer is shown as text, never parsed
    await api.publish('alpha', `<img src=x onerror="alert(1)"> hello dashboard ${'x'.repeat(300)}`)
    const row = '#events li[data-event="gossip:message"]'
    await page.waitForSelector(row, { timeout: UPDATE_BOUND_MS })
    const text = await page.textContent(row)
    expect(text).to.include(`from …${talker.peerId.slice(-6)}`)
    expect(text).to.include('<img src=x onerror="alert(1)"> hello dashboard')
    expect(text, 'a preview of 200 characters, marked as cut').to.match(/x{100,}…”/)
    expect(text).not.to.include('x'.repeat(250))
    expect(await page.$$eval('#events img', (imgs) => imgs.length)).to.equal(0)
    await talker.close()
  })

  it('drops a peer that disconnects, logs no errors, and saves a screenshot', async () => {
    const gone = await nodes.start('gone', { dial: [observer.address] })
    await page.waitForSelector(peerNode(gone.peerId), { timeout: UPDATE_BOUND_MS + 5_000 })
    await gone.close()
    await page.waitForSelector(peerNode(gone.peerId), { state: 'detached', timeout: UPDATE_BOUND_MS + 5_000 })
    // keyboard: a peer takes focus and shows its details; every node is labelled for screen readers
    await page.focus(peerNode(firstId))
    await page.waitForSelector('#tooltip:not([hidden])', { timeout: 2_000 })
    expect(await page.textContent('#tooltip')).to.include(firstId)
    const unlabelled = await page.$$eval(
      '#graph g.node',
      (els) => els.filter((e) => !e.getAttribute('aria-label')).length,
    )
    expect(unlabelled).to.equal(0)
    await page.evaluate('document.activeElement.blur()')
    await page.waitForSelector('#tooltip', { state: 'hidden', timeout: 2_000 })
    // let the layout settle for the picture
    await page.waitForTimeout(1_500)
    await mkdir(dirname(DASHBOARD_SCREENSHOT), { recursive: true })
    await page.screenshot({ path: DASHBOARD_SCREENSHOT, fullPage: true })
    console.log(`    screenshot: ${DASHBOARD_SCREENSHOT}`)
    expect(pageErrors, pageErrors.join('\n')).to.deep.equal([])
  })
})
