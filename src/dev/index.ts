/** `mesh dev` as a library: a node that follows its config files (watch, diff, apply the smallest change). */
export {
  describeChanges,
  describeSteps,
  formatReloadReport,
  type ReloadReport,
} from './reload-report.js'
export { type DevSession, type StartDevOptions, startDev } from './start-dev.js'
export { type FileWatcher, fileLabel, watchFiles } from './watch-files.js'
