import { defineErrors } from 'meshkit'

/** The coded errors of `mesh init` (scaffoldProject, installDependencies). */
export const ERRORS = defineErrors({
  MESH_ERR_INIT_UNKNOWN_TEMPLATE: {
    user: true,
    message: (template: string, available: string[]) =>
      `There is no template '${template}'. Available templates: ${available.join(', ')}.`,
    hint: (_template: string, available: string[]) =>
      `Pass one of them with --template, e.g. \`mesh init my-app --template ${available[0] ?? 'basic'}\`.`,
  },
  MESH_ERR_INIT_DIR_NOT_EMPTY: {
    user: true,
    message: (dir: string, entries: string[]) =>
      `The directory ${dir} is not empty (${entries.slice(0, 5).join(', ')}${entries.length > 5 ? ', ...' : ''}).`,
    hint: () =>
      'Pick a new or empty directory, or pass --force to write into it (files the template has are overwritten, others kept).',
  },
  MESH_ERR_INIT_BAD_NAME: {
    user: true,
    message: (name: string, problems: string[], _suggestion?: string) =>
      `"${name}" cannot be an npm package name: ${problems.join('; ')}.`,
    hint: (_name: string, _problems: string[], suggestion?: string) =>
      `Name the directory${suggestion ? ` e.g. ${suggestion}` : ' with lowercase letters, digits and "-"'}, or pass --name <package-name>.`,
  },
  MESH_ERR_INIT_INSTALL_FAILED: {
    user: true,
    message: (dir: string, reason: string) =>
      `The project was created in ${dir}, but \`npm install\` failed: ${reason}`,
    hint: () => 'Fix the problem npm reports, then run `npm install` in the project directory yourself.',
  },
})

/** The coded error `code` of this app, with its message and fix-it hint for `args`. */
export const initError = ERRORS.create
