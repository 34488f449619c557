import { defineErrors } from 'meshkit/plugin'

/** The coded errors of jaccardClusters() and its classes (used directly, e.g. in tests and tools). */
export const CLUSTER_ERRORS = defineErrors({
  MESH_ERR_CLUSTERS_INVALID_OPTION: {
    user: true,
    message: (problem: string) => `jaccardClusters: ${problem}.`,
    hint: () =>
      'Fix the option in jaccardClusters({ ... }) (the config schema checks the same bounds; see docs/clustering.md).',
  },
})

/** The coded error for an option out of its bounds (`problem`: what it must be, and what it was). */
export const invalidOption = (problem: string) =>
  CLUSTER_ERRORS.create('MESH_ERR_CLUSTERS_INVALID_OPTION', [problem])
