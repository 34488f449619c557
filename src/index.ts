/**
 * meshkit: the library entry. `import { defineConfig, definePlugin } from 'meshkit'`.
 * Built-in plugins live in `meshkit/plugins`.
 */
export * from './core/index.js'
