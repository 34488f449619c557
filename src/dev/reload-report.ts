import type { ConfigDiff, ReloadStep, ValueChange } from 'meshkit'

/** What one reload of `mesh dev` did. */
export interface ReloadReport {
  /** 1 for the first reload of a session, then 2, 3, ... */
  id: number
  /** When the reload finished (ISO 8601). */
  at: string
  /** The watched files whose change started it (relative to the project when inside it). */
  files: string[]
  /**
   * `applied`: the running node took the new config (in place or rebuilt); `unchanged`: the files
   * changed but the resolved config did not; `failed`: the config did not load, did not validate, or
   * could not be applied, and the running node is untouched (still serving with its previous config).
   */
  status: 'applied' | 'unchanged' | 'failed'
  /** `in-place`: same libp2p node, connections kept; `rebuild`: a new node, same identity, swapped in. */
  mode: 'none' | 'in-place' | 'rebuild'
  /** Each change, e.g. `plugins.jaccard-clusters.threshold: 0.7 -> 0.5` or `plugin 'mdns' added`. */
  changes: string[]
  /** What was done, e.g. `jaccard-clusters: reconfigured (threshold)` or `node: rebuilt (listen changed ...)`. */
  actions: string[]
  /** Why a new node was needed (empty for in-place reloads). */
  reasons: string[]
  /** The in-place update failed and a new node was built instead: why (the error text). */
  fallback?: string
  /**
   * A failed apply had to stop the running node (the new one wanted its fixed port) and started it
   * again with its previous config: same identity, new connections. Otherwise a failure leaves it untouched.
   */
  restarted?: boolean
  /** Where it failed: loading (syntax, module errors), validating, or applying. */
  phase?: 'load' | 'validate' | 'apply'
  /** The error (code and the text the CLI prints, with file:line:col for syntax errors). */
  error?: { code?: string; message: string }
  /** The current node's peer id after the reload. */
  peerId: string
  /** True only when the config moved to another data dir (so another identity). */
  peerIdChanged: boolean
  /** Topics joined at runtime that were joined again on a rebuilt node. */
  topicsRejoined: string[]
  /** Loading and validating the config, ms. */
  loadMs: number
  /** Applying it to the node (diff + reconfigure/restart or build + swap), ms. */
  applyMs: number
  /** From the first file change seen to the end of the reload (includes the debounce), ms. */
  totalMs: number
}

const MAX_VALUE = 60

function show(value: unknown): string {
  if (value === undefined) return '(unset)'
  let text: string
  try {
    text = typeof value === 'function' ? `[function ${value.name || 'anonymous'}]` : JSON.stringify(value)
  } catch {
    text = String(value)
  }
  text ??= String(value)
  return text.length > MAX_VALUE ? `${text.slice(0, MAX_VALUE)}…` : text
}

function line(path: string, change: ValueChange): string {
  return `${path}: ${show(change.before)} -> ${show(change.after)}`
}

/** Every change of a diff as one line each. */
export function describeChanges(diff: ConfigDiff): string[] {
  const out: string[] = []
  for (const c of diff.core) out.push(line(c.path, c))
  for (const name of diff.plugins.added) out.push(`plugin '${name}' added`)
  for (const name of diff.plugins.removed) out.push(`plugin '${name}' removed`)
  if (diff.plugins.reordered) out.push('plugin order changed')
  for (const p of diff.plugins.changed) {
    if (p.code) out.push(`plugin '${p.name}': code changed`)
    for (const o of p.options) out.push(line(`plugins.${p.name}${o.path ? `.${o.path}` : ''}`, o))
  }
  return out
}

/** The steps of an update as one line each. */
export function describeSteps(steps: readonly ReloadStep[]): string[] {
  return steps.map((s) => `${s.target}: ${s.action}${s.detail ? ` (${s.detail})` : ''} in ${ms(s.ms)}`)
}

function ms(value: number): string {
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`
}

/** A report as the terminal shows it: a headline, then the changes, the actions and any error. */
export function formatReloadReport(report: ReloadReport): string {
  const files = report.files.length > 0 ? ` (${report.files.join(', ')})` : ''
  const lines: string[] = []
  if (report.status === 'failed') {
    lines.push(
      `reload #${report.id}${files} failed while ${report.phase === 'apply' ? 'applying' : report.phase === 'validate' ? 'validating' : 'loading'} the config; ${report.restarted ? 'the running node was restarted with its previous config' : 'the running node is untouched'}`,
    )
    if (report.error) lines.push(...report.error.message.split('\n').map((l) => `  ${l}`))
    return lines.join('\n')
  }
  if (report.status === 'unchanged') {
    lines.push(`reload #${report.id}${files}: no effective change (loaded in ${ms(report.loadMs)})`)
    return lines.join('\n')
  }
  const how = report.mode === 'rebuild' ? 'rebuilt the node' : 'applied in place'
  lines.push(
    `reload #${report.id}${files}: ${how} in ${ms(report.applyMs)} (load ${ms(report.loadMs)}, total ${ms(report.totalMs)})`,
  )
  for (const c of report.changes) lines.push(`  changed   ${c}`)
  for (const a of report.actions) lines.push(`  ${a.includes('rebuilt') ? 'rebuilt  ' : 'applied  '} ${a}`)
  if (report.fallback) lines.push(`  in place failed, so rebuilt: ${report.fallback.split('\n')[0]}`)
  if (report.topicsRejoined.length > 0) lines.push(`  re-joined topics: ${report.topicsRejoined.join(', ')}`)
  if (report.peerIdChanged) lines.push(`  new peer id ${report.peerId} (the data dir changed)`)
  return lines.join('\n')
}
