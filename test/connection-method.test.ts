/**
 * The one connection-method judgement (src/contracts/connection-method.ts): what the tools, metrics() and
 * holePunch() call direct, hole-punched or relayed, and who provides the 'connection-methods' capability.
 */
import type { Connection } from '@libp2p/interface'
import { expect } from 'chai'
import { CONNECTION_METHODS_CAPABILITY, type ConnectionMethodSource, connectionMethod } from 'meshkit/plugin'
import { holePunch, metrics } from 'meshkit/plugins'

const PEER = '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'
const RELAY = `/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGMYMmN1RGUYjWaSV6P3XtnBjwnosnJGNMnttfVCRnd6g`

/** The fields of a libp2p connection the judgement reads. */
function connection(remoteAddr: string, limits?: { bytes?: bigint; seconds?: number }): Connection {
  return {
    id: 'c1',
    remoteAddr: { toString: () => remoteAddr },
    remotePeer: { toString: () => PEER },
    direction: 'outbound',
    limits,
  } as unknown as Connection
}

describe('connection methods: the one judgement', () => {
  it('a circuit relay connection is relayed, with limits or without (a relay may grant one without)', () => {
    const circuit = `${RELAY}/p2p-circuit/p2p/${PEER}`
    expect(connectionMethod(connection(circuit, { seconds: 120 }))).to.equal('relayed')
    expect(connectionMethod(connection(circuit))).to.equal('relayed')
    // what an event or a source says does not make a relayed connection direct
    const source: ConnectionMethodSource = { methodOf: () => 'direct' }
    expect(
      connectionMethod(connection(circuit), { method: 'direct', transport: 'relay' }, [source]),
    ).to.equal('relayed')
  })

  it('a WebRTC connection signalled through a relay is hole-punched; TCP is direct unless told otherwise', () => {
    expect(connectionMethod(connection(`${RELAY}/p2p-circuit/webrtc/p2p/${PEER}`))).to.equal('hole-punched')
    const tcp = connection(`/ip4/127.0.0.1/tcp/5001/p2p/${PEER}`)
    expect(connectionMethod(tcp)).to.equal('direct')
    expect(connectionMethod(tcp, { method: 'hole-punched', transport: 'tcp' })).to.equal('hole-punched')
    expect(connectionMethod(tcp, undefined, [{ methodOf: () => 'hole-punched' }])).to.equal('hole-punched')
  })

  it("holePunch() provides 'connection-methods'; metrics() reads method sources through it, not 'hole-punch' by name", () => {
    expect(holePunch().provides).to.include(CONNECTION_METHODS_CAPABILITY)
    expect(holePunch({ classifier: true }).provides).to.include(CONNECTION_METHODS_CAPABILITY)
    const m = metrics()
    expect(m.optionalDependencies).to.include(CONNECTION_METHODS_CAPABILITY)
    expect(m.optionalDependencies).not.to.include('hole-punch')
  })
})
