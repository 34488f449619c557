import type { StreamMuxer, StreamMuxerFactory } from '@libp2p/interface'

/**
 * @chainsafe/libp2p-yamux opens an outbound stream by sending its window update in a microtask
 * (`onCreateStream()`); when the connection closed in between, that send throws `StreamStateError`
 * outside any caller, an uncaught exception that ends the process. A peer that hangs up at the right
 * moment, or a busy event loop, is enough (seen in the simulator: docs/scale.md). The guard aborts the
 * new stream instead, which its opener sees as a failed stream.
 */
export function guardMuxerFactory(factory: StreamMuxerFactory): StreamMuxerFactory {
  const create = factory.createStreamMuxer.bind(factory)
  factory.createStreamMuxer = (maConn) => guardMuxer(create(maConn))
  return factory
}

interface WindowUpdating {
  sendWindowUpdate?: () => void
  abort(err: Error): void
}

function guardMuxer(muxer: StreamMuxer): StreamMuxer {
  const target = muxer as unknown as { onCreateStream?: (...args: unknown[]) => WindowUpdating }
  const onCreateStream = target.onCreateStream?.bind(muxer)
  if (!onCreateStream) return muxer
  target.onCreateStream = (...args: unknown[]) => {
    const stream = onCreateStream(...args)
    const sendWindowUpdate = stream.sendWindowUpdate?.bind(stream)
    if (sendWindowUpdate) {
      stream.sendWindowUpdate = () => {
        try {
          sendWindowUpdate()
        } catch (err) {
          stream.abort(err instanceof Error ? err : new Error(String(err)))
        }
      }
    }
    return stream
  }
  return muxer
}
