/**
 * The one registry of Meshkit's coded errors. Every error a user can cause names what is wrong and
 * says how to fix it; `userError: true` means the CLI prints it without a stack trace and exits 2.
 */

interface ErrorSpec<A extends unknown[]> {
  /** Whether the error comes from user input (config, CLI args, files) rather than a bug or the network. */
  user: boolean
  message: (...args: A) => string
  hint?: (...args: A) => string
}

function spec<A extends unknown[]>(s: ErrorSpec<A>): ErrorSpec<A> {
  return s
}

export const ERRORS = {
  MESH_ERR_CONFIG_NOT_FOUND: spec({
    user: true,
    message: (path: string) => `Config file ${path} does not exist.`,
    hint: () => 'Check the path given to --config, or run without --config to search the project directory.',
  }),
  MESH_ERR_CONFIG_LOAD: spec({
    user: true,
    message: (file: string, reason: string) => `Could not load ${file}: ${reason}`,
    hint: () => 'Fix the error at the location shown; the config is a module that must run without throwing.',
  }),
  MESH_ERR_CONFIG_NOT_OBJECT: spec({
    user: true,
    message: (file: string, got: string) =>
      `${file} must export a config object (or a function returning one), but it exported ${got}.`,
    hint: () => "Write `export default defineConfig({ ... })` with defineConfig from 'meshkit'.",
  }),
  MESH_ERR_CONFIG_INVALID: spec({
    user: true,
    message: (file: string, details: string, count: number) =>
      `${file} has ${count} invalid setting${count === 1 ? '' : 's'}:\n${details}`,
  }),
  MESH_ERR_DUPLICATE_PLUGIN: spec({
    user: true,
    message: (name: string, first: number, second: number) =>
      `Two plugins are named '${name}' (plugins[${first}] and plugins[${second}]).`,
    hint: () => 'Plugin names must be unique: remove one of them from `plugins`.',
  }),
  MESH_ERR_MISSING_DEPENDENCY: spec({
    user: true,
    message: (plugin: string, dep: string) =>
      `Plugin '${plugin}' depends on '${dep}', but no plugin in the config provides it.`,
    hint: (plugin: string, dep: string) =>
      `Add a plugin that provides '${dep}' to \`plugins\`, or remove '${plugin}'.`,
  }),
  MESH_ERR_NO_TRANSPORT: spec({
    user: true,
    message: () => 'The config has no transport plugin, so the node could neither listen nor dial.',
  }),
  MESH_ERR_DEPENDENCY_CYCLE: spec({
    user: true,
    message: (cycle: string[]) => `Plugin dependencies form a cycle: ${cycle.join(' -> ')}.`,
    hint: () => 'Break the cycle: one of these plugins must not depend on the next one.',
  }),
  MESH_ERR_SLOT_CONFLICT: spec({
    user: true,
    message: (slot: string, a: string, b: string) =>
      `Plugins '${a}' and '${b}' both provide '${slot}', and a node can have only one '${slot}' plugin.`,
    hint: (slot: string) => `Keep one '${slot}' plugin in \`plugins\` and remove the other.`,
  }),
  MESH_ERR_SERVICE_CONFLICT: spec({
    user: true,
    message: (service: string, a: string, b: string) =>
      `Plugins '${a}' and '${b}' both add the libp2p service '${service}'.`,
    hint: () => 'Remove one of the two plugins, or rename the service key in your own plugin.',
  }),
  MESH_ERR_MISSING_PACKAGE: spec({
    user: true,
    message: (what: string, pkg: string) => `${what} needs the package ${pkg}, which is not installed.`,
    hint: (_what: string, pkg: string) =>
      `Install it in your project: npm install ${pkg} (Meshkit leaves it out of a default install).`,
  }),
  MESH_ERR_PORT_CLASH: spec({
    user: true,
    message: (port: string, a: string, b: string) => `${a} and ${b} both bind ${port}.`,
    hint: () => 'Give one of them another port in its options (or in `listen`); port 0 takes any free port.',
  }),
  MESH_ERR_TRANSPORT_CONFLICT: spec({
    user: true,
    message: (tag: string) => `Two plugins add the same libp2p transport (${tag}).`,
    hint: () =>
      "Keep one: remove the built-in plugin (e.g. tcp()) when libp2pModule({ transports }) brings its own, or drop it from libp2pModule's transports.",
  }),
  MESH_ERR_UNDECLARED_DEPENDENCY: spec({
    user: true,
    message: (plugin: string, cap: string) =>
      `Plugin '${plugin}' used '${cap}' without declaring it in its \`dependencies\`.`,
    hint: (_plugin: string, cap: string) =>
      `Add '${cap}' to the plugin's \`dependencies\` (or \`optionalDependencies\` when it works without one) so the kernel can order and check it.`,
  }),
  MESH_ERR_NOT_EXCLUSIVE: spec({
    user: false,
    message: (plugin: string, cap: string, count: number) =>
      `Plugin '${plugin}' asked for the single provider of '${cap}', but ${count} plugins provide it.`,
    hint: () =>
      "Use `ctx.useAll(capability)` for capabilities that several plugins provide (like 'transport').",
  }),
  MESH_ERR_NODE_NOT_CREATED: spec({
    user: false,
    message: (plugin: string) => `Plugin '${plugin}' asked for the libp2p node before it was created.`,
    hint: () => 'Use ctx.libp2p in start() or later, not in setup() or libp2p().',
  }),
  MESH_ERR_PLUGIN_HOOK_FAILED: spec({
    user: false,
    message: (plugin: string, hook: string, reason: string) =>
      `Plugin '${plugin}' failed in ${hook}(): ${reason}`,
  }),
  MESH_ERR_NODE_CREATE_FAILED: spec({
    user: false,
    message: (reason: string) => `Could not create the libp2p node: ${reason}`,
    hint: () => 'Check the libp2p options the plugins contribute (transports, services, addresses).',
  }),
  MESH_ERR_LISTEN_FAILED: spec({
    user: true,
    message: (reason: string) => `The node could not listen: ${reason}`,
    hint: () => 'Pick another port in `listen` (or --listen), or stop the process that holds it.',
  }),
  MESH_ERR_RECONFIGURE_FAILED: spec({
    user: false,
    message: (plugin: string, reason: string) =>
      `Could not apply the new config in place (${plugin}): ${reason}`,
    hint: () =>
      'The node keeps running with its previous config; a reload falls back to building a new node. A plugin whose reconfigure hook fails must keep its previous options.',
  }),
  MESH_ERR_STOP_FAILED: spec({
    user: false,
    message: (details: string) => `Stopping the node finished with errors:\n${details}`,
  }),
  MESH_ERR_IDENTITY_CORRUPT: spec({
    user: true,
    message: (file: string, reason: string) =>
      `The identity key ${file} is not a valid private key (${reason}).`,
    hint: () =>
      'Restore the file from a backup. To start over with a NEW peer id, move the file away; Meshkit never overwrites it.',
  }),
  MESH_ERR_IDENTITY_UNREADABLE: spec({
    user: true,
    message: (file: string, reason: string) => `The identity key ${file} cannot be read (${reason}).`,
    hint: () => 'Check the file permissions and owner (it should be readable by this user, mode 0600).',
  }),
  MESH_ERR_DATA_DIR: spec({
    user: true,
    message: (dir: string, reason: string) => `The data dir ${dir} cannot be used (${reason}).`,
    hint: () => 'Pass a writable directory with --data-dir, or set `dataDir` in the config.',
  }),
  MESH_ERR_DATA_DIR_LOCKED: spec({
    user: true,
    message: (dir: string) => `The data dir ${dir} is in use by another running node.`,
    hint: () => 'Stop the other node, or give this one its own --data-dir.',
  }),
  MESH_ERR_INVALID_ARGUMENT: spec({
    user: true,
    message: (what: string, reason: string) => `Invalid ${what}: ${reason}`,
  }),
  MESH_ERR_UNKNOWN_PLUGIN: spec({
    user: true,
    message: (name: string) => `No plugin named '${name}' is registered.`,
  }),
  MESH_ERR_INIT_UNKNOWN_TEMPLATE: spec({
    user: true,
    message: (template: string, available: string[]) =>
      `There is no template '${template}'. Available templates: ${available.join(', ')}.`,
    hint: (_template: string, available: string[]) =>
      `Pass one of them with --template, e.g. \`mesh init my-app --template ${available[0] ?? 'basic'}\`.`,
  }),
  MESH_ERR_INIT_DIR_NOT_EMPTY: spec({
    user: true,
    message: (dir: string, entries: string[]) =>
      `The directory ${dir} is not empty (${entries.slice(0, 5).join(', ')}${entries.length > 5 ? ', ...' : ''}).`,
    hint: () =>
      'Pick a new or empty directory, or pass --force to write into it (files the template has are overwritten, others kept).',
  }),
  MESH_ERR_INIT_BAD_NAME: spec({
    user: true,
    message: (name: string, problems: string[], _suggestion?: string) =>
      `"${name}" cannot be an npm package name: ${problems.join('; ')}.`,
    hint: (_name: string, _problems: string[], suggestion?: string) =>
      `Name the directory${suggestion ? ` e.g. ${suggestion}` : ' with lowercase letters, digits and "-"'}, or pass --name <package-name>.`,
  }),
  MESH_ERR_INIT_INSTALL_FAILED: spec({
    user: true,
    message: (dir: string, reason: string) =>
      `The project was created in ${dir}, but \`npm install\` failed: ${reason}`,
    hint: () => 'Fix the problem npm reports, then run `npm install` in the project directory yourself.',
  }),
  MESH_ERR_CONTROL_UNAUTHORIZED: spec({
    user: true,
    message: (why: string) => `The control API refused the request: ${why}.`,
    hint: () =>
      'Send `Authorization: Bearer <token>` with the token from <dataDir>/control.token (the mesh CLI does it when given the same --data-dir as the node).',
  }),
  MESH_ERR_CONTROL_FORBIDDEN: spec({
    user: true,
    message: (why: string) =>
      `The control API refused a request that may come from another web page: ${why}.`,
    hint: () =>
      'Only the dashboard itself (same origin) and non-browser clients (the mesh CLI, curl, scripts) may change the node; a page on another origin or port may not.',
  }),
  MESH_ERR_CONTROL_CONTENT_TYPE: spec({
    user: true,
    message: (got: string) =>
      `A request that changes the node must send Content-Type: application/json, not ${got}.`,
    hint: () =>
      "Send the JSON body with the header 'Content-Type: application/json' (curl: -H 'content-type: application/json').",
  }),
  MESH_ERR_CONTROL_NOT_LOOPBACK: spec({
    user: true,
    message: (file: string, target: string) =>
      `${file} names ${target}, which is not a control API on this machine (http on 127.0.0.0/8 or [::1], or a unix socket of this user): the token is never sent there.`,
    hint: (file: string) =>
      `A node writes its own ${file} when it starts: if you did not write this one, delete it and check who can write to the data dir (it should be mode 0700).`,
  }),
  MESH_ERR_CONTROL_NOT_RUNNING: spec({
    user: true,
    message: (dataDir: string, why: string) => `No running node serves a control API in ${dataDir} (${why}).`,
    hint: () =>
      'Start one with `mesh start` (its control API is on by default), or pass the --data-dir the node uses.',
  }),
  MESH_ERR_CONTROL_BAD_REQUEST: spec({
    user: true,
    message: (reason: string) => `Bad control API request: ${reason}`,
    hint: () => 'Send a JSON body such as {"topic":"my-topic"} with Content-Type: application/json.',
  }),
  MESH_ERR_CONTROL_TOO_LARGE: spec({
    user: true,
    message: (limit: number) => `The request body is larger than the control API's limit of ${limit} bytes.`,
  }),
  MESH_ERR_CONTROL_NOT_FOUND: spec({
    user: true,
    message: (method: string, path: string) => `The control API has no endpoint ${method} ${path}.`,
    hint: () => 'See docs/control-api.md for the endpoints (GET /api/status, /api/peers, ...).',
  }),
  MESH_ERR_CONTROL_NO_PROVIDER: spec({
    user: true,
    message: (capability: string) => `The running node has no plugin providing '${capability}'.`,
  }),
  MESH_ERR_CONTROL_NO_NODE: spec({
    user: false,
    message: () => 'The control API has no running node right now (it is starting, swapping or stopping).',
    hint: () => 'Retry in a moment.',
  }),
  MESH_ERR_CONTROL_FAILED: spec({
    user: false,
    message: (what: string, reason: string) => `The control API could not ${what}: ${reason}`,
  }),
} as const

export type ErrorCode = keyof typeof ERRORS
type ArgsOf<C extends ErrorCode> = Parameters<(typeof ERRORS)[C]['message']>

/** An error with a stable `code` from {@link ERRORS}, a message, and a hint saying how to fix it. */
export class MeshError extends Error {
  override readonly name = 'MeshError'
  readonly code: ErrorCode
  readonly hint?: string
  readonly userError: boolean
  /** Further errors collected on the way (e.g. every failure during stop). */
  readonly errors: unknown[]

  constructor(
    code: ErrorCode,
    message: string,
    opts: { hint?: string; cause?: unknown; errors?: unknown[]; userError?: boolean } = {},
  ) {
    super(message, { cause: opts.cause })
    this.code = code
    this.hint = opts.hint
    this.userError = opts.userError ?? ERRORS[code].user
    this.errors = opts.errors ?? []
  }

  /** The message and hint as one text, as the CLI prints it. */
  describe(): string {
    return this.hint ? `${this.code}: ${this.message}\n  Fix: ${this.hint}` : `${this.code}: ${this.message}`
  }
}

/** Creates the coded error `code` with the registry's message and hint for `args`. */
export function meshError<C extends ErrorCode>(
  code: C,
  args: ArgsOf<C>,
  opts: { cause?: unknown; errors?: unknown[]; hint?: string } = {},
): MeshError {
  const s = ERRORS[code] as ErrorSpec<unknown[]>
  const hint = opts.hint ?? s.hint?.(...(args as unknown[]))
  return new MeshError(code, s.message(...(args as unknown[])), { ...opts, hint })
}

export function isMeshError(err: unknown, code?: ErrorCode): err is MeshError {
  return err instanceof MeshError && (code === undefined || err.code === code)
}

/** A short reason text for any thrown value. */
export function reasonOf(err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}
