import { defineErrors } from 'meshkit/plugin'

/** The coded errors of gossip() that reach its user (the API used too early). */
export const GOSSIP_ERRORS = defineErrors({
  MESH_ERR_GOSSIP_NOT_STARTED: {
    user: true,
    message: () => 'The API of gossip() was used before the node started.',
    hint: () =>
      'Use the gossip API after `startMesh()` / `node.start()` resolved (or in a plugin `start()`).',
  },
})
