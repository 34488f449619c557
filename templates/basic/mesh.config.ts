import { defineConfig } from 'meshkit'
import { identify, noise, ping, quic, tcp, yamux } from 'meshkit/plugins'

export default defineConfig({
  name: 'my-node',
  plugins: [identify(), ping(), noise(), yamux(), tcp(), quic()],
})
