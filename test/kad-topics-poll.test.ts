/**
 * The member-exchange poll of a short topic (plugins/kad-topics/poll-schedule.ts): quick while it learns,
 * slowing down when a small topic stays short for good, quick again when something changes.
 */
import { expect } from 'chai'
import {
  IDLE_ROUNDS_BEFORE_SLOWING,
  nextPoll,
  QUICK_POLL_MAX_MS,
  quickPoll,
} from '../plugins/kad-topics/poll-schedule.js'

describe('kad-topics: the poll of a short topic', () => {
  const settings = { initial: 250, max: 30_000 }

  /** The pauses of `rounds` rounds that all learn nothing, and how much time they cover. */
  const idle = (rounds: number, random = () => 0.5) => {
    let s = quickPoll(settings.initial)
    const delays: number[] = []
    for (let i = 0; i < rounds; i++) {
      delays.push(s.delay)
      s = nextPoll(s, false, settings, random)
    }
    return { delays, s }
  }

  it('doubles up to 2 s while a topic may still be finding members', () => {
    const { delays } = idle(IDLE_ROUNDS_BEFORE_SLOWING + 1)
    expect(delays).to.deep.equal([250, 500, 1000, 2000, 2000])
    expect(Math.max(...delays)).to.equal(QUICK_POLL_MAX_MS)
  })

  it('slows down to lookupMax when rounds keep learning nothing (a small topic is short for good)', () => {
    const { delays } = idle(20)
    expect(delays.at(-1)).to.equal(settings.max)
    // an hour of a small topic: ~2 polls a minute instead of 30
    let s = quickPoll(settings.initial)
    let t = 0
    let rounds = 0
    while (t < 3_600_000) {
      t += s.delay
      rounds++
      s = nextPoll(s, false, settings)
    }
    expect(rounds).to.be.below(140)
    expect(rounds).to.be.above(100)
  })

  it('is jittered once slow (nodes of one topic do not poll in step), never past lookupMax', () => {
    const low = idle(9, () => 0).s.delay
    const high = idle(9, () => 0.999).s.delay
    expect(high).to.be.greaterThan(low)
    for (const r of [0, 0.5, 0.999]) expect(idle(30, () => r).s.delay).to.be.at.most(settings.max)
  })

  it('is quick again after a round that learned something or changed the topic peers', () => {
    const { s } = idle(15)
    expect(s.delay).to.be.greaterThan(QUICK_POLL_MAX_MS)
    expect(nextPoll(s, true, settings)).to.deep.equal(quickPoll(settings.initial))
  })

  it('stays at 2 s at most when lookupMax is shorter', () => {
    const short = { initial: 100, max: 1000 }
    let s = quickPoll(short.initial)
    for (let i = 0; i < 30; i++) s = nextPoll(s, false, short)
    expect(s.delay).to.be.at.most(QUICK_POLL_MAX_MS)
    expect(s.delay).to.be.at.least(QUICK_POLL_MAX_MS * 0.9)
  })
})
