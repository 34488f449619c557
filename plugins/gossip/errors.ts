import { defineErrors, MeshError } from 'meshkit/plugin'

/** The coded errors of gossip() that reach its user (the API used too early). */
export const GOSSIP_ERRORS = defineErrors({
  MESH_ERR_GOSSIP_NOT_STARTED: {
    user: true,
    message: () => 'The API of gossip() was used before the node started.',
    hint: () =>
      'Use the gossip API after `startMesh()` / `node.start()` resolved (or in a plugin `start()`).',
  },
})

/** A coded error for a call the app got wrong (exit 2 / HTTP 400 in the CLI and control API). */
export function invalid(what: string, reason: string, hint: string): MeshError {
  return new MeshError('MESH_ERR_INVALID_ARGUMENT', `Invalid ${what}: ${reason}`, { hint })
}
