export {
  type ControlClient,
  type ControlServer,
  type ControlServerOptions,
  createControlClient,
  startControlServer,
} from '../control/index.js'
export { type DemoOptions, type DemoSummary, type RunDemoOptions, runDemo, startDemo } from '../demo/index.js'
export {
  type DevSession,
  formatReloadReport,
  type ReloadReport,
  type StartDevOptions,
  startDev,
} from '../dev/index.js'
export {
  installDependencies,
  listTemplates,
  packageNameProblems,
  type ScaffoldOptions,
  type ScaffoldResult,
  scaffoldProject,
} from '../init/index.js'
export { type DemoCommandOptions, demoCommand } from './demo-command.js'
export { type DevCommandOptions, devCommand } from './dev-command.js'
export { type InitCommandOptions, initCommand } from './init-command.js'
export { type NatCommandOptions, natCommand } from './nat-command.js'
export { type CliIo, createProgram, EXIT, runCli } from './run-cli.js'
export { type StartCommandOptions, startCommand } from './start-command.js'
export {
  registerStatusCommands,
  type StatusCommandName,
  type StatusCommandOptions,
  statusCommand,
  topicCommand,
} from './status-commands.js'
