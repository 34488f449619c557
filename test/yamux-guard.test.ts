/**
 * @chainsafe/libp2p-yamux sends a new outbound stream's window update in a microtask; when the
 * connection closed in between, the send throws outside any caller (an uncaught exception that ends the
 * process; found by the simulator, docs/scale.md). Meshkit's yamux plugin guards it.
 */
import { yamux as libp2pYamux } from '@chainsafe/libp2p-yamux'
import type { StreamMuxer } from '@libp2p/interface'
import { multiaddrConnectionPair } from '@libp2p/utils'
import { expect } from 'chai'
import { guardMuxerFactory } from '../plugins/yamux/guarded-muxer.js'

/** Opens a stream, then the connection's write side closes before the stream's first frame is sent. */
async function raceStreamAgainstClose(guarded: boolean): Promise<{ uncaught: unknown[]; status: string }> {
  const factory = libp2pYamux()()
  const [outbound] = multiaddrConnectionPair()
  const muxer: StreamMuxer = (guarded ? guardMuxerFactory(factory) : factory).createStreamMuxer(outbound)
  const uncaught: unknown[] = []
  const mochaListeners = process.listeners('uncaughtException')
  process.removeAllListeners('uncaughtException')
  const catcher = (err: unknown) => uncaught.push(err)
  process.on('uncaughtException', catcher)
  try {
    // the stream's window update is queued as a microtask by onCreateStream: the connection's write side
    // closes right after, before that microtask runs
    const m = muxer as unknown as { onCreateStream: (...args: unknown[]) => unknown }
    const onCreateStream = m.onCreateStream.bind(muxer)
    m.onCreateStream = (...args: unknown[]) => {
      const created = onCreateStream(...args)
      ;(outbound as unknown as { writeStatus: string }).writeStatus = 'closed'
      return created
    }
    const stream = await muxer.createStream().catch(() => undefined)
    await new Promise((r) => setTimeout(r, 50))
    return { uncaught, status: stream?.status ?? 'not opened' }
  } finally {
    process.off('uncaughtException', catcher)
    for (const l of mochaListeners) process.on('uncaughtException', l)
    ;(outbound as unknown as { writeStatus: string }).writeStatus = 'writable'
    muxer.abort(new Error('test over'))
  }
}

describe('yamux plugin: a stream opened as its connection closes', () => {
  it('unguarded, the stream-opening window update throws outside any caller (the upstream race)', async () => {
    const { uncaught } = await raceStreamAgainstClose(false)
    expect(uncaught.map((e) => (e as Error).name)).to.deep.equal(['StreamStateError'])
  })

  it('guarded, nothing is thrown: the stream is aborted instead', async () => {
    const { uncaught, status } = await raceStreamAgainstClose(true)
    expect(uncaught).to.deep.equal([])
    expect(status).to.equal('aborted')
  })
})
