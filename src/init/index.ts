/** `mesh init` as a library: scaffold a project from a template folder. */
export { type InstallOptions, installDependencies } from './install.js'
export { packageNameProblems, suggestPackageName } from './package-name.js'
export {
  defaultMeshkitSpec,
  isInstalledPackage,
  MIN_NODE,
  meshkitVersion,
  projectFileName,
  type ScaffoldOptions,
  type ScaffoldResult,
  scaffoldProject,
  systemNodeVersion,
  versionAtLeast,
} from './scaffold.js'
export { listTemplates, TEMPLATE_INFO, type TemplateInfo, templateInfo, templatesDir } from './templates.js'
