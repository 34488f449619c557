/**
 * Coded errors. Every error a user can cause names what is wrong and says how to fix it; `user: true`
 * means the CLI prints it without a stack trace and exits 2. The registry is open: core defines its codes
 * here, and plugins and apps define theirs with {@link defineErrors} (like Fastify's `createError`).
 */

/** How one coded error reads: its message and fix-it hint from the same arguments. */
export interface ErrorSpec<A extends unknown[] = never[]> {
  /** Whether the error comes from user input (config, CLI args, files) rather than a bug or the network. */
  user: boolean
  message: (...args: A) => string
  hint?: (...args: A) => string
}

/** Every code defined so far (core's, plugins', apps'), so that two definitions of one code are refused. */
const REGISTRY = new Map<string, ErrorSpec<unknown[]>>()

// biome-ignore lint/suspicious/noExplicitAny: each code's arguments are checked by ErrorsOf.create
type AnySpec = ErrorSpec<any>

/** The factory {@link defineErrors} returns: `errors.create(code, args)`. */
export interface ErrorsOf<S extends Record<string, AnySpec>> {
  /** The codes defined. */
  readonly codes: ReadonlyArray<keyof S & string>
  /** The coded error `code` with its message and hint for `args`. */
  create<C extends keyof S & string>(
    code: C,
    args: Parameters<S[C]['message']>,
    opts?: { cause?: unknown; errors?: unknown[]; hint?: string },
  ): MeshError
  /** Whether `err` is one of these errors (or this one `code`). */
  is(err: unknown, code?: keyof S & string): err is MeshError
}

/**
 * Defines coded errors for a plugin or an app, with messages and fix-it hints, as core defines its own.
 * Codes are UPPER_SNAKE_CASE with a prefix and unique in the process (a second definition throws).
 *
 * @example
 * const errors = defineErrors({
 *   GREETER_ERR_NO_NAME: {
 *     user: true,
 *     message: (plugin: string) => `${plugin} needs a name.`,
 *     hint: () => "Pass greeter({ name: 'alice' }).",
 *   },
 * })
 * throw errors.create('GREETER_ERR_NO_NAME', ['greeter'])
 */
export function defineErrors<S extends Record<string, AnySpec>>(specs: S): ErrorsOf<S> {
  for (const [code, spec] of Object.entries(specs)) {
    if (!/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/.test(code))
      throw new TypeError(`error code ${code} must be UPPER_SNAKE_CASE with a prefix, e.g. MYPLUGIN_ERR_X`)
    const existing = REGISTRY.get(code)
    if (existing && existing !== spec) throw new TypeError(`error code ${code} is defined twice`)
    REGISTRY.set(code, spec as ErrorSpec<unknown[]>)
  }
  return {
    codes: Object.keys(specs) as Array<keyof S & string>,
    create(code, args, opts = {}) {
      const spec = specs[code] as ErrorSpec<unknown[]>
      const hint = opts.hint ?? spec.hint?.(...(args as unknown[]))
      return new MeshError(code, spec.message(...(args as unknown[])), { ...opts, hint })
    },
    is: (err, code): err is MeshError =>
      err instanceof MeshError && (code === undefined ? err.code in specs : err.code === code),
  }
}

/** Whether `code` is a defined error code (core's, or a plugin's or app's through defineErrors). */
export function isErrorCode(code: string): boolean {
  return REGISTRY.has(code)
}

function spec<A extends unknown[]>(s: ErrorSpec<A>): ErrorSpec<A> {
  return s
}

/** Core's own codes (the kernel, the config, identity and data dir). */
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
}

/** A code of core's own errors (plugins and apps define theirs with {@link defineErrors}). */
export type ErrorCode = keyof typeof ERRORS

/** An error with a stable `code` (core's or one from {@link defineErrors}), a message, and a fix-it hint. */
export class MeshError extends Error {
  override readonly name = 'MeshError'
  readonly code: string
  readonly hint?: string
  readonly userError: boolean
  /** Further errors collected on the way (e.g. every failure during stop). */
  readonly errors: unknown[]

  constructor(
    code: string,
    message: string,
    opts: { hint?: string; cause?: unknown; errors?: unknown[]; userError?: boolean } = {},
  ) {
    super(message, { cause: opts.cause })
    this.code = code
    this.hint = opts.hint
    this.userError = opts.userError ?? REGISTRY.get(code)?.user ?? false
    this.errors = opts.errors ?? []
  }

  /** The message and hint as one text, as the CLI prints it. */
  describe(): string {
    return this.hint ? `${this.code}: ${this.message}\n  Fix: ${this.hint}` : `${this.code}: ${this.message}`
  }
}

const core = defineErrors(ERRORS)

/** Creates core's coded error `code` with the registry's message and hint for `args`. */
export function meshError<C extends ErrorCode>(
  code: C,
  args: Parameters<(typeof ERRORS)[C]['message']>,
  opts: { cause?: unknown; errors?: unknown[]; hint?: string } = {},
): MeshError {
  return core.create(code, args, opts)
}

/** Whether `err` is a coded error (any code, or this one). */
export function isMeshError(err: unknown, code?: string): err is MeshError {
  return err instanceof MeshError && (code === undefined || err.code === code)
}

/** A short reason text for any thrown value. */
export function reasonOf(err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}
