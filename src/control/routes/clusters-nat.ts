/** `GET /api/clusters` (the `clustering` slot) and `GET /api/nat` (the `nat-classification` capability). */
import { clusteringOf, clustersSnapshot, natOf } from '../readers.js'
import type { AddRoute } from '../types.js'
import { json, noProvider } from './env.js'

const CLUSTERING_HINT =
  "Add a plugin providing the 'clustering' slot to `plugins` (e.g. jaccardClusters() from 'meshkit/plugins')."
const NAT_HINT =
  "Add a plugin providing 'nat-classification' to `plugins` (e.g. natClassifier({ servers: [...] }) from 'meshkit/plugins')."

export function addClusterNatRoutes(addRoute: AddRoute): void {
  addRoute(
    'GET',
    '/api/clusters',
    json((node) => {
      const clustering = clusteringOf(node)
      if (!clustering) throw noProvider('clustering', CLUSTERING_HINT)
      return clustersSnapshot(clustering)
    }),
  )
  addRoute(
    'GET',
    '/api/nat',
    json((node) => {
      const nat = natOf(node)
      if (!nat) throw noProvider('nat-classification', NAT_HINT)
      return { report: nat.report() ?? null }
    }),
  )
}
