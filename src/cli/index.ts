export { type CliIo, createProgram, EXIT, runCli } from './run-cli.js'
export { type StartCommandOptions, startCommand } from './start-command.js'
