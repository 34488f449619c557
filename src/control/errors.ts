import { defineErrors } from 'meshkit'

/** The coded errors of the control API (server and client). */
export const ERRORS = defineErrors({
  MESH_ERR_CONTROL_UNAUTHORIZED: {
    user: true,
    message: (why: string) => `The control API refused the request: ${why}.`,
    hint: () =>
      'Send `Authorization: Bearer <token>` with the token from <dataDir>/control.token (the mesh CLI does it when given the same --data-dir as the node).',
  },
  MESH_ERR_CONTROL_FORBIDDEN: {
    user: true,
    message: (why: string) =>
      `The control API refused a request that may come from another web page: ${why}.`,
    hint: () =>
      'Only the dashboard itself (same origin) and non-browser clients (the mesh CLI, curl, scripts) may change the node; a page on another origin or port may not.',
  },
  MESH_ERR_CONTROL_CONTENT_TYPE: {
    user: true,
    message: (got: string) =>
      `A request that changes the node must send Content-Type: application/json, not ${got}.`,
    hint: () =>
      "Send the JSON body with the header 'Content-Type: application/json' (curl: -H 'content-type: application/json').",
  },
  MESH_ERR_CONTROL_NOT_LOOPBACK: {
    user: true,
    message: (file: string, target: string) =>
      `${file} names ${target}, which is not a control API on this machine (http on 127.0.0.0/8 or [::1], or a unix socket of this user): the token is never sent there.`,
    hint: (file: string) =>
      `A node writes its own ${file} when it starts: if you did not write this one, delete it and check who can write to the data dir (it should be mode 0700).`,
  },
  MESH_ERR_CONTROL_NOT_RUNNING: {
    user: true,
    message: (dataDir: string, why: string) => `No running node serves a control API in ${dataDir} (${why}).`,
    hint: () =>
      'Start one with `mesh start` (its control API is on by default), or pass the --data-dir the node uses.',
  },
  MESH_ERR_CONTROL_BAD_REQUEST: {
    user: true,
    message: (reason: string) => `Bad control API request: ${reason}`,
    hint: () => 'Send a JSON body such as {"topic":"my-topic"} with Content-Type: application/json.',
  },
  MESH_ERR_CONTROL_TOO_LARGE: {
    user: true,
    message: (limit: number) => `The request body is larger than the control API's limit of ${limit} bytes.`,
  },
  MESH_ERR_CONTROL_NOT_FOUND: {
    user: true,
    message: (method: string, path: string) => `The control API has no endpoint ${method} ${path}.`,
    hint: () => 'See docs/control-api.md for the endpoints (GET /api/status, /api/peers, ...).',
  },
  MESH_ERR_CONTROL_NO_PROVIDER: {
    user: true,
    message: (capability: string) => `The running node has no plugin providing '${capability}'.`,
  },
  MESH_ERR_CONTROL_NO_NODE: {
    user: false,
    message: () => 'The control API has no running node right now (it is starting, swapping or stopping).',
    hint: () => 'Retry in a moment.',
  },
  MESH_ERR_CONTROL_FAILED: {
    user: false,
    message: (what: string, reason: string) => `The control API could not ${what}: ${reason}`,
  },
})

/** The coded error `code` of this app, with its message and fix-it hint for `args`. */
export const controlError = ERRORS.create
