/**
 * When a short topic asks its connected peers for members again (the member exchange poll of
 * TopicManager's lookup loop). A topic stays short for good when it has fewer members than
 * `connectionsPerTopic` (a small topic): polling it every 2 s forever costs every node of such a topic
 * and the peers it asks (a 1,000-node mesh of small topics spends its time answering such polls). New
 * members reach it anyway: a newcomer polls quickly itself and dials the members it finds, and each new
 * connection starts an exchange. So once rounds in a row bring nothing new, the poll slows down, doubling
 * up to the lookup ceiling (`lookupMax`), with jitter so that the nodes of one topic do not poll in step;
 * a round that learns something, or a change of the topic's peers, makes it quick again.
 */

/** Longest pause between polls while the poll is quick (a topic still finding members). */
export const QUICK_POLL_MAX_MS = 2000
/** Rounds in a row that learned nothing before the poll slows down. */
export const IDLE_ROUNDS_BEFORE_SLOWING = 4

export interface PollSchedule {
  /** The pause before the next round. */
  delay: number
  /** Rounds in a row that learned nothing. */
  idleRounds: number
}

/** The schedule a topic starts with (and goes back to when something changes). */
export function quickPoll(initial: number): PollSchedule {
  return { delay: initial, idleRounds: 0 }
}

/**
 * The schedule after a round: `learned` (new members, or the topic's peers changed) starts over from
 * `initial`; otherwise the delay doubles, up to QUICK_POLL_MAX_MS, and past IDLE_ROUNDS_BEFORE_SLOWING
 * idle rounds up to `max` (when that is longer), jittered by up to +-10 % (`random`).
 */
export function nextPoll(
  s: PollSchedule,
  learned: boolean,
  settings: { initial: number; max: number },
  random: () => number = Math.random,
): PollSchedule {
  if (learned) return quickPoll(settings.initial)
  const idleRounds = s.idleRounds + 1
  const ceiling =
    idleRounds > IDLE_ROUNDS_BEFORE_SLOWING ? Math.max(QUICK_POLL_MAX_MS, settings.max) : QUICK_POLL_MAX_MS
  const doubled = Math.min(s.delay * 2, ceiling)
  const jittered = idleRounds > IDLE_ROUNDS_BEFORE_SLOWING ? doubled * (0.9 + 0.2 * random()) : doubled
  return { delay: Math.round(Math.min(jittered, ceiling)), idleRounds }
}
