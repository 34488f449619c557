export { type NatCommandOptions, natCommand } from './nat-command.js'
export { type CliIo, createProgram, EXIT, runCli } from './run-cli.js'
export { type StartCommandOptions, startCommand } from './start-command.js'
