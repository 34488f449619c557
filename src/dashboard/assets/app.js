// Meshkit dashboard: plain browser JavaScript, no build step, nothing fetched but this node's control API.
// Data: GET /api/{status,peers,connections,topics,clusters,nat} and the Server-Sent Events of GET
// /api/events (read with fetch), each with Authorization: Bearer <session>. The session comes from the
// one-time login code in this page's URL (/#code=...), traded at POST /api/login and kept in this tab's
// sessionStorage; the code is removed from the URL at once. Nothing secret is ever in a URL or a cookie.

const SVG = 'http://www.w3.org/2000/svg'
const MAX_EVENTS = 60
const POLL_MS = 5_000
const REFRESH_DEBOUNCE_MS = 200
/** Cluster colours (distinct on light and dark backgrounds); peers in no cluster are grey. */
const PALETTE = ['#0969da', '#bf3989', '#1a7f37', '#bc4c00', '#8250df', '#0a7b83', '#9a6700', '#cf222e']
const NO_CLUSTER = '#8c959f'
/** Best first: the edge shows the best way a peer is connected. */
const METHODS = ['direct', 'hole-punched', 'relayed']
/** Event names the page shows (other named events of the stream are skipped). */
const EVENT_NAMES = [
  'hello',
  'node:started',
  'node:stopped',
  'peer:connect',
  'peer:disconnect',
  'connection:open',
  'connection:close',
  'connection:method',
  'dial:failed',
  'bootstrap:connected',
  'bootstrap:retry',
  'topic:joined',
  'topic:left',
  'topic:announced',
  'topic:peer',
  'topic:peer:lost',
  'topic:protocol-error',
  'gossip:message',
  'gossip:published',
  'gossip:rejected',
  'gossip:peer',
  'gossip:peer:lost',
  'cluster:created',
  'cluster:removed',
  'cluster:peer-added',
  'cluster:peer-removed',
  'clustering:protocol-error',
  'nat:classified',
  'nat-probe:listening',
  'nat-probe:partners',
  'relay:reserved',
  'relay:lost',
  'relay:retry',
  'relay:reservation',
  'relay:refused',
  'relay:circuit',
  'mdns:peer',
  'config:reloaded',
  'config:error',
]

const SESSION_KEY = 'meshkit-dashboard-session'
const NEW_LINK_HINT = "Run `mesh dashboard` (with the node's --data-dir) for a new login link."
/** The session this tab uses (set by login()). */
let session = ''
const $ = (id) => document.getElementById(id)

const state = {
  status: undefined,
  /** peer id -> { peerId, addresses, connections, topics } */
  peers: new Map(),
  connections: [],
  topics: [],
  topicsNote: '',
  /** [{ id, tags, members: string[] }] */
  clusters: [],
  clustersNote: '',
  nat: undefined,
  natNote: '',
  events: [],
  statusAt: 0,
}

// ---------------------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, body) {
    const e = body?.error ?? {}
    super(e.message ?? `HTTP ${status}`)
    this.status = status
    this.code = e.code
    this.hint = e.hint
  }
}

async function api(path) {
  const res = await fetch(path, {
    headers: { Authorization: `Bearer ${session}`, Accept: 'application/json' },
    cache: 'no-store',
  })
  return answer(res)
}

async function answer(res) {
  const text = await res.text()
  let body
  try {
    body = text ? JSON.parse(text) : undefined
  } catch {
    body = undefined
  }
  if (!res.ok) throw new ApiError(res.status, body)
  return body
}

function showError(message) {
  const el = $('error')
  if (!message) {
    el.hidden = true
    el.textContent = ''
    return
  }
  el.hidden = false
  el.textContent = message
}

function describeError(err) {
  if (err instanceof ApiError && err.status === 401)
    return `Not logged in (the node restarted, or this tab has no session). ${NEW_LINK_HINT}`
  if (err instanceof ApiError)
    return `${err.code ?? 'error'}: ${err.message}${err.hint ? ` (${err.hint})` : ''}`
  return `Cannot reach the node: ${err?.message ?? err}. Is it still running?`
}

/** What the node's plugins provide (from /api/status), or undefined before the status is known. */
function provides(capability) {
  const plugins = state.status?.plugins
  if (!Array.isArray(plugins)) return undefined
  return plugins.some((p) => Array.isArray(p.provides) && p.provides.includes(capability))
}

const MISSING = {
  discovery: "No topic discovery plugin: add kadTopics() from 'meshkit/plugins'.",
  clustering: "No clustering plugin: add jaccardClusters() from 'meshkit/plugins'.",
  'nat-classification': "No NAT classifier: add natClassifier() from 'meshkit/plugins'.",
}

/**
 * Optional endpoints (topics, clusters, nat) exist when a plugin provides their capability: not asked
 * otherwise (no 404s in the console), and a 404 is a note, not an error.
 */
async function optional(path, capability) {
  if (provides(capability) === false) return { value: undefined, note: MISSING[capability] }
  try {
    return { value: await api(path), note: '' }
  } catch (err) {
    if (err instanceof ApiError && err.status === 404)
      return { value: undefined, note: err.hint ? `${err.message} ${err.hint}` : err.message }
    throw err
  }
}

const loaders = {
  status: async () => {
    state.status = await api('/api/status')
    state.statusAt = Date.now()
  },
  peers: async () => {
    const list = await api('/api/peers')
    state.peers = new Map((Array.isArray(list) ? list : []).map((p) => [p.peerId, p]))
  },
  connections: async () => {
    const list = await api('/api/connections')
    state.connections = Array.isArray(list) ? list : []
  },
  topics: async () => {
    const { value, note } = await optional('/api/topics', 'discovery')
    state.topics = Array.isArray(value) ? value : []
    state.topicsNote = note
  },
  clusters: async () => {
    const { value, note } = await optional('/api/clusters', 'clustering')
    state.clusters = normalizeClusters(value)
    state.clustersNote = note
  },
  nat: async () => {
    const { value, note } = await optional('/api/nat', 'nat-classification')
    // { report: NatReport | null }
    state.nat = value && typeof value === 'object' && 'report' in value ? value.report : value
    state.natNote = note
  },
}

/** Accepts `[cluster]` or `{ clusters: [cluster] }`; members as ids or `{ peerId }` objects. */
function normalizeClusters(value) {
  const list = Array.isArray(value) ? value : Array.isArray(value?.clusters) ? value.clusters : []
  const own = new Set(Array.isArray(value?.ownClusters) ? value.ownClusters : [])
  return list.map((c) => {
    const members = Array.isArray(c.members)
      ? c.members.map((m) => (typeof m === 'string' ? m : m?.peerId)).filter(Boolean)
      : []
    const id = String(c.id ?? c.clusterId ?? '?')
    return { id, tags: Array.isArray(c.tags) ? c.tags : [], members, own: Boolean(c.own) || own.has(id) }
  })
}

const pending = new Set()
let refreshTimer
let refreshing = false

/** Reloads the given parts (debounced), then renders. */
function refresh(parts) {
  for (const p of parts) pending.add(p)
  if (refreshTimer) return
  refreshTimer = setTimeout(runRefresh, REFRESH_DEBOUNCE_MS)
}

async function runRefresh() {
  refreshTimer = undefined
  if (refreshing) {
    refreshTimer = setTimeout(runRefresh, REFRESH_DEBOUNCE_MS)
    return
  }
  const parts = [...pending]
  pending.clear()
  refreshing = true
  try {
    // the status first: it says which optional endpoints exist
    if (parts.includes('status') || !state.status) await loaders.status()
    await Promise.all(parts.filter((p) => p !== 'status').map((p) => loaders[p]()))
    showError('')
    render()
  } catch (err) {
    showError(describeError(err))
  } finally {
    refreshing = false
  }
}

// ------------------------------------------------------------------------------------------- events

const PEER_PARTS = ['status', 'peers', 'connections']

function onEvent(name, data) {
  const event = { ...(data && typeof data === 'object' ? data : {}), event: name, at: Date.now() }
  if (name === 'hello') {
    if (data?.peerId) {
      state.status = data
      state.statusAt = Date.now()
      render()
    }
    refresh(Object.keys(loaders))
    return
  }
  state.events.unshift(event)
  state.events.length = Math.min(state.events.length, MAX_EVENTS)
  // show a new peer at once; the next refresh fills in its details
  if (name === 'peer:connect' && event.peerId && !state.peers.has(event.peerId)) {
    state.peers.set(event.peerId, { peerId: event.peerId, addresses: [], connections: 1, topics: [] })
  }
  if (name === 'peer:disconnect' && event.peerId) state.peers.delete(event.peerId)
  if (name.startsWith('peer:') || name.startsWith('connection:') || name.startsWith('relay:'))
    refresh(PEER_PARTS)
  else if (name.startsWith('topic:')) refresh(['topics', 'peers', 'status'])
  else if (name.startsWith('cluster')) refresh(['clusters'])
  else if (name.startsWith('nat')) refresh(['nat', 'status'])
  else if (name.startsWith('node:') || name.startsWith('config:')) refresh(Object.keys(loaders))
  render()
}

function setLive(kind, text) {
  $('live').dataset.state = kind
  $('live-text').textContent = text
}

/** Reads the event stream with fetch (EventSource cannot send the Authorization header). */
async function readEvents(signal) {
  const res = await fetch('/api/events', {
    headers: { Authorization: `Bearer ${session}`, Accept: 'text/event-stream' },
    cache: 'no-store',
    signal,
  })
  if (!res.ok || !res.body)
    throw await answer(res).then(
      () => new ApiError(res.status, undefined),
      (err) => err,
    )
  setLive('live', 'live')
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += value.replace(/\r\n?/g, '\n')
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      let name = 'message'
      const data = []
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim()
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''))
      }
      if (data.length === 0 || (name !== 'message' && !EVENT_NAMES.includes(name))) continue
      let parsed
      try {
        parsed = JSON.parse(data.join('\n'))
      } catch {
        parsed = { data: data.join('\n') }
      }
      // unnamed events carry their name in the data
      onEvent(name === 'message' ? String(parsed.event ?? 'message') : name, parsed)
    }
  }
}

/** Keeps the event stream open: reconnects with a growing delay, stops when the session is refused. */
async function connectEvents() {
  let delay = 500
  for (;;) {
    try {
      await readEvents()
      delay = 500
      setLive('connecting', 'reconnecting…')
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        showError(describeError(err))
        setLive('error', 'not logged in')
        return
      }
      setLive('connecting', 'reconnecting…')
    }
    await new Promise((resolve) => setTimeout(resolve, delay))
    delay = Math.min(delay * 2, 10_000)
  }
}

/**
 * The session of this tab: a login code in the URL (`#code=...`) is traded for a new one and removed
 * from the URL (and so from the history entry) at once; else the one this tab already has.
 */
async function login() {
  const code = new URLSearchParams(location.hash.slice(1)).get('code')
  if (code) {
    history.replaceState(null, '', `${location.pathname}${location.search}`)
    const res = await fetch('/api/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ code }),
      cache: 'no-store',
    })
    const body = await answer(res)
    session = String(body?.session ?? '')
    sessionStorage.setItem(SESSION_KEY, session)
    return
  }
  session = sessionStorage.getItem(SESSION_KEY) ?? ''
}

// ------------------------------------------------------------------------------------------ helpers

const short = (id) => (id ? `…${String(id).slice(-6)}` : '?')

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue
    if (k === 'class') node.className = v
    else if (k === 'text') node.textContent = v
    else node.setAttribute(k, String(v))
  }
  for (const c of children) if (c !== undefined && c !== null) node.append(c)
  return node
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v))
  return node
}

function formatUptime(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '–'
  const s = Math.floor(ms / 1000)
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  if (h > 0) return `${h}h ${m}m`
  if (m > 0) return `${m}m ${s % 60}s`
  return `${s}s`
}

const clock = (t) => new Date(t).toLocaleTimeString([], { hour12: false })

/** The connections to each peer, and the best method among them. */
function connectionsByPeer() {
  const map = new Map()
  for (const c of state.connections) {
    const list = map.get(c.peerId) ?? []
    list.push(c)
    map.set(c.peerId, list)
  }
  return map
}

function bestMethod(conns) {
  let best = 'direct'
  let rank = Number.POSITIVE_INFINITY
  for (const c of conns ?? []) {
    const r = METHODS.indexOf(c.method)
    if (r >= 0 && r < rank) {
      rank = r
      best = c.method
    }
  }
  return best
}

/** Topics each peer shares with this node, from /api/topics (and /api/peers when it says). */
function topicsByPeer() {
  const map = new Map()
  const add = (peer, topic) => {
    const set = map.get(peer) ?? new Set()
    set.add(topic)
    map.set(peer, set)
  }
  for (const t of state.topics) for (const p of t.peers ?? []) add(p, t.topic)
  for (const p of state.peers.values()) for (const t of p.topics ?? []) add(p.peerId, t)
  return map
}

function clustersByPeer() {
  const map = new Map()
  for (const c of state.clusters) {
    for (const m of c.members) {
      const list = map.get(m) ?? []
      list.push(c.id)
      map.set(m, list)
    }
  }
  return map
}

const clusterColour = new Map()
function colourOf(clusterId) {
  if (clusterId === undefined) return NO_CLUSTER
  if (!clusterColour.has(clusterId))
    clusterColour.set(clusterId, PALETTE[clusterColour.size % PALETTE.length])
  return clusterColour.get(clusterId)
}

// -------------------------------------------------------------------------------------------- graph

/** A small force layout: pairwise repulsion, springs to this node, weaker springs within a cluster. */
const graph = {
  nodes: new Map(),
  edges: new Map(),
  alpha: 1,
  running: false,
  width: 800,
  height: 600,
  dragging: undefined,
  selfId: undefined,
}

function graphNode(id, self) {
  let n = graph.nodes.get(id)
  if (n) return n
  const angle = Math.random() * Math.PI * 2
  const r = self ? 0 : restLength() * (0.9 + Math.random() * 0.2)
  n = { id, self, x: Math.cos(angle) * r, y: Math.sin(angle) * r, vx: 0, vy: 0, fixed: self }
  const g = svg('g', { class: `node ${self ? 'self' : 'peer new'}`, 'data-peer-id': id, tabindex: 0 })
  g.setAttribute('role', 'img')
  const circle = svg('circle', { r: self ? 14 : 9 })
  const label = svg('text', { x: self ? 18 : 13, y: 4 })
  label.textContent = self ? 'this node' : short(id)
  g.append(circle, label)
  n.el = g
  n.circle = circle
  attachNodeEvents(n)
  $('graph-nodes').append(g)
  graph.nodes.set(id, n)
  if (!self) setTimeout(() => g.classList.remove('new'), 1500)
  return n
}

function syncGraph() {
  const selfId = state.status?.peerId
  const svgRoot = $('graph')
  if (selfId && graph.selfId !== selfId) {
    for (const n of graph.nodes.values()) if (n.self) removeNode(n.id)
    graph.selfId = selfId
  }
  if (selfId) {
    const self = graphNode(selfId, true)
    self.el.setAttribute('aria-label', `this node ${selfId}`)
    svgRoot.dataset.selfId = selfId
  }
  const byPeer = connectionsByPeer()
  const topics = topicsByPeer()
  const clusters = clustersByPeer()
  const wanted = new Set(state.peers.keys())
  let changed = false
  for (const id of [...graph.nodes.keys()]) {
    const n = graph.nodes.get(id)
    if (!n.self && !wanted.has(id)) {
      removeNode(id)
      changed = true
    }
  }
  for (const id of wanted) {
    if (id === selfId) continue
    if (!graph.nodes.has(id)) changed = true
    const n = graphNode(id, false)
    const conns = byPeer.get(id) ?? []
    const method = bestMethod(conns)
    const peerClusters = clusters.get(id) ?? []
    const peerTopics = [...(topics.get(id) ?? [])].sort()
    n.method = method
    n.clusters = peerClusters
    n.topics = peerTopics
    n.conns = conns
    n.circle.setAttribute('fill', colourOf(peerClusters[0]))
    n.el.dataset.method = method
    n.el.dataset.clusters = peerClusters.join(' ')
    n.el.dataset.topics = peerTopics.join(' ')
    n.el.setAttribute(
      'aria-label',
      `peer ${id}, ${method}${peerTopics.length ? `, topics ${peerTopics.join(', ')}` : ''}${
        peerClusters.length ? `, clusters ${peerClusters.join(', ')}` : ''
      }`,
    )
    let edge = graph.edges.get(id)
    if (!edge) {
      edge = svg('line', { 'data-peer-id': id })
      $('graph-edges').append(edge)
      graph.edges.set(id, edge)
    }
    edge.setAttribute('class', `edge method-${method}`)
    edge.dataset.method = method
  }
  const peerCount = [...graph.nodes.values()].filter((n) => !n.self).length
  svgRoot.dataset.peerCount = String(peerCount)
  svgRoot.dataset.edgeCount = String(graph.edges.size)
  $('graph-desc').textContent = `This node in the centre and ${peerCount} connected peer${
    peerCount === 1 ? '' : 's'
  } around it.`
  $('graph-empty').hidden = peerCount > 0
  if (changed) reheat(0.8)
  else if (!graph.running) drawGraph()
}

function removeNode(id) {
  const n = graph.nodes.get(id)
  n?.el.remove()
  graph.nodes.delete(id)
  graph.edges.get(id)?.remove()
  graph.edges.delete(id)
}

const reducedMotion = window.matchMedia?.('(prefers-reduced-motion: reduce)')

function reheat(alpha) {
  graph.alpha = Math.max(graph.alpha, alpha)
  if (reducedMotion?.matches && !graph.dragging) {
    // no animation: settle the layout at once, then draw it
    for (let i = 0; i < 400 && graph.alpha >= 0.005; i++) {
      step()
      graph.alpha *= 0.97
    }
    drawGraph()
    return
  }
  if (!graph.running) {
    graph.running = true
    requestAnimationFrame(tick)
  }
}

function tick() {
  step()
  drawGraph()
  graph.alpha *= 0.97
  if (graph.alpha < 0.005 && !graph.dragging) {
    graph.running = false
    return
  }
  requestAnimationFrame(tick)
}

/** The distance peers settle at from this node: most of the panel, more with more peers. */
function restLength() {
  const peers = Math.max(1, graph.nodes.size - 1)
  return Math.min(graph.height / 2 - 40, graph.width / 2 - 60, 150 + peers * 4)
}

function step() {
  const nodes = [...graph.nodes.values()]
  const n = nodes.length
  const rest = restLength()
  const a = graph.alpha
  for (let i = 0; i < n; i++) {
    const p = nodes[i]
    for (let j = i + 1; j < n; j++) {
      const q = nodes[j]
      let dx = q.x - p.x
      let dy = q.y - p.y
      let d2 = dx * dx + dy * dy
      if (d2 < 0.01) {
        dx = Math.random() - 0.5
        dy = Math.random() - 0.5
        d2 = dx * dx + dy * dy
      }
      const d = Math.sqrt(d2)
      const f = (9000 / Math.max(d2, 400)) * a
      const fx = (dx / d) * f
      const fy = (dy / d) * f
      p.vx -= fx
      p.vy -= fy
      q.vx += fx
      q.vy += fy
    }
  }
  const self = graph.nodes.get(graph.selfId)
  if (self) {
    for (const p of nodes) {
      if (p.self) continue
      const dx = p.x - self.x
      const dy = p.y - self.y
      const d = Math.sqrt(dx * dx + dy * dy) || 1
      const f = (d - rest) * 0.04 * a
      p.vx -= (dx / d) * f
      p.vy -= (dy / d) * f
    }
  }
  // peers of the same cluster attract each other a little
  for (let i = 0; i < n; i++) {
    const p = nodes[i]
    if (!p.clusters?.length) continue
    for (let j = i + 1; j < n; j++) {
      const q = nodes[j]
      if (!q.clusters?.length || q.clusters[0] !== p.clusters[0]) continue
      const dx = q.x - p.x
      const dy = q.y - p.y
      const d = Math.sqrt(dx * dx + dy * dy) || 1
      const f = (d - 70) * 0.003 * a
      p.vx += (dx / d) * f
      p.vy += (dy / d) * f
      q.vx -= (dx / d) * f
      q.vy -= (dy / d) * f
    }
  }
  const maxX = graph.width / 2 - 30
  const maxY = graph.height / 2 - 20
  for (const p of nodes) {
    if (p.fixed || p === graph.dragging) {
      p.vx = 0
      p.vy = 0
      continue
    }
    p.vx *= 0.6
    p.vy *= 0.6
    p.x = Math.max(-maxX, Math.min(maxX, p.x + p.vx))
    p.y = Math.max(-maxY, Math.min(maxY, p.y + p.vy))
  }
}

function drawGraph() {
  for (const n of graph.nodes.values())
    n.el.setAttribute('transform', `translate(${n.x.toFixed(1)},${n.y.toFixed(1)})`)
  const self = graph.nodes.get(graph.selfId)
  for (const [id, edge] of graph.edges) {
    const p = graph.nodes.get(id)
    if (!p || !self) continue
    edge.setAttribute('x1', self.x.toFixed(1))
    edge.setAttribute('y1', self.y.toFixed(1))
    edge.setAttribute('x2', p.x.toFixed(1))
    edge.setAttribute('y2', p.y.toFixed(1))
  }
}

// --- dragging and details

let tooltip
function showDetails(n, clientX, clientY) {
  tooltip ??= document.body.appendChild(el('div', { class: 'tooltip', role: 'tooltip', id: 'tooltip' }))
  tooltip.replaceChildren()
  const lines = n.self
    ? [['this node', n.id]]
    : [
        ['peer', n.id],
        ['method', n.method],
        ['transport', [...new Set((n.conns ?? []).map((c) => c.transport))].join(', ') || '–'],
        ['address', (n.conns ?? []).map((c) => c.remoteAddr).join(' ') || '–'],
        ['topics', n.topics?.join(', ') || '–'],
        ['clusters', n.clusters?.join(', ') || '–'],
      ]
  for (const [k, v] of lines)
    tooltip.append(el('div', {}, el('strong', { text: `${k}: ` }), el('code', { text: v })))
  tooltip.hidden = false
  const x = Math.min(clientX + 12, window.innerWidth - 320)
  tooltip.style.left = `${Math.max(0, x)}px`
  tooltip.style.top = `${clientY + 12}px`
  n.el.classList.add('highlight')
}

function hideDetails(n) {
  if (tooltip) tooltip.hidden = true
  n.el.classList.remove('highlight')
}

function toGraph(evt) {
  const root = $('graph')
  const pt = root.createSVGPoint()
  pt.x = evt.clientX
  pt.y = evt.clientY
  const m = root.getScreenCTM()
  return m ? pt.matrixTransform(m.inverse()) : { x: 0, y: 0 }
}

function attachNodeEvents(n) {
  n.el.addEventListener('pointerenter', (e) => showDetails(n, e.clientX, e.clientY))
  n.el.addEventListener('pointerleave', () => hideDetails(n))
  n.el.addEventListener('focus', () => {
    const r = n.el.getBoundingClientRect()
    showDetails(n, r.right, r.top)
  })
  n.el.addEventListener('blur', () => hideDetails(n))
  n.el.addEventListener('pointerdown', (e) => {
    if (n.self) return
    graph.dragging = n
    n.el.setPointerCapture(e.pointerId)
    reheat(0.3)
  })
  n.el.addEventListener('pointermove', (e) => {
    if (graph.dragging !== n) return
    const p = toGraph(e)
    n.x = p.x
    n.y = p.y
    drawGraph()
  })
  const release = () => {
    if (graph.dragging === n) graph.dragging = undefined
  }
  n.el.addEventListener('pointerup', release)
  n.el.addEventListener('pointercancel', release)
}

// ------------------------------------------------------------------------------------------- panels

function renderStatus() {
  const s = state.status
  if (!s) return
  $('node-name').textContent = s.name ? `· ${s.name}` : ''
  $('node-peer-id').textContent = s.peerId ?? '?'
  $('stat-state').textContent = s.state ?? '–'
  $('stat-peers').textContent = String(state.peers.size || s.peers || 0)
  $('stat-connections').textContent = String(state.connections.length || s.connections || 0)
  $('stat-topics').textContent = String((s.topics ?? state.topics.map((t) => t.topic)).length)
  renderUptime()
  document.title = `Meshkit ${s.name ?? ''} · ${state.peers.size} peers`
}

function renderUptime() {
  const s = state.status
  if (!s) return
  const uptime = typeof s.uptimeMs === 'number' ? s.uptimeMs + (Date.now() - state.statusAt) : Number.NaN
  $('stat-uptime').textContent = s.state === 'started' || s.state === undefined ? formatUptime(uptime) : '–'
}

function renderTopics() {
  const list = $('topics')
  const items = state.topics.map((t) => {
    const peers = t.peers ?? []
    return el(
      'li',
      { 'data-topic': t.topic, 'data-topic-peer-count': peers.length },
      el(
        'div',
        { class: 'row' },
        el('strong', { text: t.topic }),
        el('span', { class: 'muted', text: `${peers.length} peer${peers.length === 1 ? '' : 's'}` }),
      ),
      peers.length
        ? el(
            'div',
            { class: 'chips' },
            ...peers.map((p) => el('span', { class: 'chip', title: p, text: short(p) })),
          )
        : undefined,
    )
  })
  const empty = state.topicsNote || 'No topics joined.'
  list.replaceChildren(...(items.length ? items : [el('li', { class: 'muted', text: empty })]))
}

/** A colour dot (set through the CSSOM: the page's CSP allows no inline style attributes). */
function swatch(colour) {
  const node = el('span', { class: 'swatch', 'aria-hidden': 'true' })
  node.style.background = colour
  return node
}

function renderClusters() {
  const list = $('clusters')
  const items = state.clusters.map((c) =>
    el(
      'li',
      { 'data-cluster-id': c.id, 'data-member-count': c.members.length },
      el(
        'div',
        { class: 'row' },
        el(
          'span',
          {},
          swatch(colourOf(c.id)),
          el('strong', { text: c.id }),
          c.own ? el('span', { class: 'muted', text: ' (this node)' }) : undefined,
        ),
        el('span', {
          class: 'muted',
          text: `${c.members.length} member${c.members.length === 1 ? '' : 's'}`,
        }),
      ),
      c.tags.length
        ? el(
            'div',
            { class: 'chips', 'aria-label': 'tags' },
            ...c.tags.map((t) => el('span', { class: 'chip', text: t })),
          )
        : undefined,
    ),
  )
  const empty = state.clustersNote || 'No clusters yet.'
  list.replaceChildren(...(items.length ? items : [el('li', { class: 'muted', text: empty })]))
}

function renderNat() {
  const box = $('nat')
  const report = state.nat ?? state.status?.nat
  if (!report) {
    box.replaceChildren(
      el('p', {
        class: 'muted',
        text: state.natNote || 'No NAT verdict yet (add natClassifier() to classify).',
      }),
    )
    box.dataset.verdict = 'none'
    return
  }
  const dl = el('dl', { class: 'nat-verdict' })
  const verdicts = []
  for (const proto of ['udp', 'tcp']) {
    const v = report[proto]
    if (!v) continue
    const type = typeof v === 'string' ? v : v.type
    verdicts.push(`${proto}:${type}`)
    const conf = typeof v.confidence === 'number' ? ` (confidence ${Math.round(v.confidence * 100)}%)` : ''
    dl.append(el('dt', { text: proto.toUpperCase() }), el('dd', { text: `${type}${conf}` }))
    if (v.reason) dl.append(el('dd', { class: 'muted', text: v.reason }))
  }
  if (report.at)
    dl.append(el('dt', { text: 'classified' }), el('dd', { text: new Date(report.at).toLocaleString() }))
  box.dataset.verdict = verdicts.join(' ') || 'unknown'
  box.replaceChildren(dl)
}

function summary(e) {
  const parts = []
  if (e.peerId) parts.push(short(e.peerId))
  if (e.topic) parts.push(`topic ${e.topic}`)
  // gossip messages: who published, and the start of the text (events never carry the whole payload)
  if (e.from) parts.push(`from ${short(String(e.from))}`)
  if (typeof e.recipients === 'number') parts.push(`to ${e.recipients} peer${e.recipients === 1 ? '' : 's'}`)
  if (typeof e.text === 'string') parts.push(`“${e.text}${e.truncated ? '…' : ''}”`)
  else if (e.binary) parts.push(`${e.bytes} bytes (not text)`)
  if (e.clusterId) parts.push(`cluster ${e.clusterId}`)
  if (e.method) parts.push(String(e.method))
  if (e.transport && !e.method) parts.push(String(e.transport))
  if (e.reason) parts.push(String(e.reason))
  if (e.relay) parts.push(`relay ${short(e.relay)}`)
  if (e.udp || e.tcp) parts.push(`udp ${e.udp ?? '?'}, tcp ${e.tcp ?? '?'}`)
  if (e.error) parts.push(String(e.error))
  return parts.join(' · ')
}

let renderedEvents = 0
function renderEvents() {
  const list = $('events')
  if (renderedEvents === state.events.length && list.childElementCount === state.events.length) return
  list.replaceChildren(
    ...state.events.map((e) =>
      el(
        'li',
        { 'data-event': e.event },
        el('time', { datetime: new Date(e.at).toISOString(), text: clock(e.at) }),
        el('span', {}, el('span', { class: 'name', text: e.event }), el('span', { text: ` ${summary(e)}` })),
      ),
    ),
  )
  renderedEvents = state.events.length
}

function renderPeersTable() {
  const byPeer = connectionsByPeer()
  const topics = topicsByPeer()
  const clusters = clustersByPeer()
  const rows = [...state.peers.keys()].sort().map((id) => {
    const conns = byPeer.get(id) ?? []
    return el(
      'tr',
      { 'data-peer-id': id },
      el('td', {}, el('code', { title: id, text: id })),
      el('td', { text: bestMethod(conns) }),
      el('td', { text: [...new Set(conns.map((c) => c.transport))].join(', ') || '–' }),
      el('td', {}, el('code', { text: conns.map((c) => c.remoteAddr).join(' ') || '–' })),
      el('td', { text: [...(topics.get(id) ?? [])].sort().join(', ') || '–' }),
      el('td', { text: (clusters.get(id) ?? []).join(', ') || '–' }),
    )
  })
  $('peers-body').replaceChildren(
    ...(rows.length
      ? rows
      : [el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'No peers connected.' }))]),
  )
}

function render() {
  renderStatus()
  syncGraph()
  renderTopics()
  renderClusters()
  renderNat()
  renderEvents()
  renderPeersTable()
}

// ---------------------------------------------------------------------------------------------- main

function measure() {
  const root = $('graph')
  const r = root.getBoundingClientRect()
  if (r.width > 0 && r.height > 0) {
    graph.width = 800
    graph.height = Math.max(400, Math.round((800 * r.height) / r.width))
    root.setAttribute('viewBox', `${-graph.width / 2} ${-graph.height / 2} ${graph.width} ${graph.height}`)
  }
}

async function main() {
  measure()
  window.addEventListener('resize', () => {
    measure()
    reheat(0.3)
  })
  try {
    await login()
  } catch (err) {
    showError(
      err instanceof ApiError && err.status === 401
        ? `This login link cannot be used: ${err.message} ${NEW_LINK_HINT}`
        : describeError(err),
    )
    setLive('error', 'not logged in')
    return
  }
  if (!session) {
    showError(`Not logged in: open the login link the node printed. ${NEW_LINK_HINT}`)
    setLive('error', 'not logged in')
    return
  }
  refresh(Object.keys(loaders))
  connectEvents()
  setInterval(() => refresh(Object.keys(loaders)), POLL_MS)
  setInterval(renderUptime, 1000)
}

main()
