import { defineConfig } from 'meshkit'
import { identify, kadTopics, noise, ping, quic, tcp, yamux } from 'meshkit/plugins'

/** This repository's own node: the defaults, spelled out. `npx mesh start` runs it. */
export default defineConfig(({ mode }) => ({
  name: 'meshkit-dev',
  dataDir: '.mesh',
  logLevel: mode === 'production' ? 'info' : 'debug',
  plugins: [identify(), ping(), noise(), yamux(), tcp(), quic(), kadTopics()],
}))
