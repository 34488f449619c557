import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { isMeshError, type MeshError, resolveConfig } from 'meshkit'
import { createAddressScope } from 'meshkit/plugin'
import { builtinPlugins, defaultConfig } from 'meshkit/plugins'
import { keepPublicAddresses } from '../plugins/kad-topics/index.js'

const LAB = ['198.51.100.0/24', '203.0.113.0/24']

describe('address scope (network.publicCidrs)', () => {
  it('treats the configured ranges as public, everything else as libp2p does', () => {
    const scope = createAddressScope(LAB)
    expect(scope.isPublic(multiaddr('/ip4/198.51.100.7/tcp/4001'))).to.equal(true)
    expect(scope.isPublic(multiaddr('/ip4/203.0.113.9/udp/4001/quic-v1'))).to.equal(true)
    expect(scope.isPublic(multiaddr('/ip4/192.0.2.1/tcp/4001')), 'another documentation range').to.equal(
      false,
    )
    expect(scope.isPublic(multiaddr('/ip4/127.0.0.1/tcp/4001'))).to.equal(false)
    expect(scope.isPublic(multiaddr('/ip4/8.8.8.8/tcp/4001')), 'a global address').to.equal(true)
    expect(createAddressScope().isPublic(multiaddr('/ip4/198.51.100.7/tcp/4001')), 'no config').to.equal(
      false,
    )
  })

  it("is what kadTopics keeps in the DHT with addressScope 'public'", () => {
    const mapper = keepPublicAddresses(createAddressScope(LAB))
    const peer = {
      id: {} as never,
      multiaddrs: ['/ip4/198.51.100.7/tcp/4001', '/ip4/198.18.0.2/tcp/4001', '/ip4/127.0.0.1/tcp/4001'].map(
        (a) => multiaddr(a),
      ),
    }
    expect(mapper(peer).multiaddrs.map(String)).to.deep.equal(['/ip4/198.51.100.7/tcp/4001'])
  })

  it('validates the ranges with the config', () => {
    const resolved = resolveConfig(
      { network: { publicCidrs: LAB } },
      { env: { command: 'start', mode: 'test' }, registry: builtinPlugins, defaults: defaultConfig() },
    )
    expect(resolved.network.publicCidrs).to.deep.equal(LAB)
    let err: unknown
    try {
      resolveConfig(
        { network: { publicCidrs: ['198.51.100.0', '300.1.2.3/8'] } },
        { env: { command: 'start', mode: 'test' }, registry: builtinPlugins, defaults: defaultConfig() },
      )
    } catch (e) {
      err = e
    }
    expect(isMeshError(err, 'MESH_ERR_CONFIG_INVALID')).to.equal(true)
    const message = (err as MeshError).message
    expect(message).to.include('network.publicCidrs[0]').and.to.include('network.publicCidrs[1]')
    expect(message).to.include('expected an IP range in CIDR notation')
    expect(message).to.include("write e.g. '198.51.100.0/24'")
  })
})
