import { defineErrors } from 'meshkit/plugin'

/** The coded errors of kadTopics() that reach its user (the API used too early). */
export const TOPICS_ERRORS = defineErrors({
  MESH_ERR_TOPICS_NOT_STARTED: {
    user: true,
    message: () => 'The topic discovery API of kadTopics() was used before the node started.',
    hint: () =>
      'Use the discovery API after `startMesh()` / `node.start()` resolved (or in a plugin `start()`).',
  },
})
