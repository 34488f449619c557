import { readFileSync, readlinkSync } from 'node:fs'
import { hostname } from 'node:os'

/**
 * Who a process is, precisely enough to tell it from a later process that got the same pid: its start
 * time (clock ticks since boot, from `/proc/<pid>/stat`), the kernel's boot id and its PID and network
 * namespaces. Each Linux-only field is undefined elsewhere (or where /proc cannot be read).
 */
export interface ProcessIdentity {
  pid: number
  host: string
  /** Start time of the process, field 22 of `/proc/<pid>/stat`. */
  start?: string
  /** `/proc/sys/kernel/random/boot_id`: the same for every process (and container) of one running kernel. */
  boot?: string
  /** `pid:[<inode>]` of `/proc/self/ns/pid`: pids mean the same process only within one PID namespace. */
  pidns?: string
  /** `net:[<inode>]` of `/proc/self/ns/net`: abstract unix socket names are per network namespace. */
  netns?: string
}

/** What `/proc/<pid>/stat` says of a process; `gone` when there is none, `hidden` when it exists unseen. */
export type ProcessState = { start: string; zombie: boolean } | 'gone' | 'hidden'

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim() || undefined
  } catch {
    return undefined
  }
}

function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path)
  } catch {
    return undefined
  }
}

/** Whether `pid` can name one process: a positive integer (0 and negatives name process groups). */
export function isPid(pid: unknown): pid is number {
  return typeof pid === 'number' && Number.isSafeInteger(pid) && pid > 0 && pid <= 0x7fffffff
}

/** Whether a process with this pid exists (in this PID namespace), whoever owns it. */
export function pidExists(pid: number): boolean {
  if (!isPid(pid)) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** The start time and zombie state of `pid` from /proc (Linux), else whether it exists at all. */
export function processState(pid: number): ProcessState {
  if (!isPid(pid)) return 'gone'
  const stat = readText(`/proc/${pid}/stat`)
  if (stat) {
    // the command name (field 2) is in parentheses and may itself hold spaces and parentheses
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // fields[0] is field 3 (state), so field 22 (starttime) is fields[19]
    if (fields.length > 19) return { start: fields[19], zombie: fields[0] === 'Z' || fields[0] === 'X' }
  }
  // /proc mounted with hidepid, or no /proc at all (macOS, BSD): only existence is known
  return pidExists(pid) ? 'hidden' : 'gone'
}

let self: ProcessIdentity | undefined

/** This process's identity (computed once). */
export function selfIdentity(): ProcessIdentity {
  if (!self) {
    const state = processState(process.pid)
    self = {
      pid: process.pid,
      host: hostname(),
      start: typeof state === 'object' ? state.start : undefined,
      boot: readText('/proc/sys/kernel/random/boot_id'),
      pidns: readLink('/proc/self/ns/pid'),
      netns: readLink('/proc/self/ns/net'),
    }
  }
  return self
}

/**
 * Whether the process that `who` describes still runs, as far as this process can tell: `alive` or
 * `gone` when it is in this PID namespace on this kernel with a known start time (a reused pid has
 * another start time), or without /proc when its pid is unused; `unknown` otherwise (another host or
 * namespace, or a pid in use by a process whose start time cannot be read).
 */
export function processLiveness(who: Partial<ProcessIdentity>): 'alive' | 'gone' | 'unknown' {
  const me = selfIdentity()
  if (!isPid(who.pid)) return 'gone'
  const sameKernel = who.boot !== undefined && who.boot === me.boot
  if (sameKernel && who.pidns !== undefined && who.pidns === me.pidns) {
    const state = processState(who.pid)
    if (state === 'gone') return 'gone'
    if (state === 'hidden' || who.start === undefined) return 'unknown'
    return state.start === who.start && !state.zombie ? 'alive' : 'gone'
  }
  if (me.boot === undefined && who.boot === undefined && who.host === me.host)
    return pidExists(who.pid) ? 'unknown' : 'gone'
  return 'unknown'
}
