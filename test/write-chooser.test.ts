/**
 * The TAP write path's chooser (native/write_chooser.h), known answers: it starts with
 * io_uring, writes 64 bursts each way in turns (a first turn each to warm up, not counted,
 * then 3 turns each), keeps the cheaper per frame, holds that choice 10 s, then samples again;
 * a fixed choice never moves.
 */
import { describe, expect, it } from 'vitest';
import { native } from './helpers/harness.js';

const TURN = 64;
const TURNS = 8; // 2 warm-up turns, then 3 measured turns each way
/** `n` bursts of 32 frames at `at` ms, costing `plain` and `uring` ns per frame. */
const bursts = (n: number, plain: number, uring: number, at = 0): [number, number, number, number][] =>
  Array.from({ length: n }, () => [32, plain, uring, at]);

describe('write chooser', () => {
  it('samples both ways in turns of 64 bursts, then keeps the cheaper', () => {
    const ways = native.writeChooserRun(-1, bursts(TURNS * TURN + 100, 1000, 700));
    const turns = Array.from({ length: TURNS }, (_, t) => [...new Set(ways.slice(t * TURN, (t + 1) * TURN))]);
    expect(turns).toEqual([[1], [0], [1], [0], [1], [0], [1], [0]]);
    expect(new Set(ways.slice(TURNS * TURN))).toEqual(new Set([1]));
    const plainWins = native.writeChooserRun(-1, bursts(TURNS * TURN + 100, 600, 700));
    expect(new Set(plainWins.slice(TURNS * TURN))).toEqual(new Set([0]));
  });

  it("the first turn of each way is not counted: io_uring's cold start does not lose it the choice", () => {
    // io_uring's first 64 bursts cost 5000 ns a frame (its ring set up, its slots faulted in),
    // then 700; plain writes 1000 throughout. Counting the first turn, io_uring would average
    // 1775 and lose.
    const cold = bursts(TURNS * TURN + 100, 1000, 700).map((b, i) =>
      i < TURN ? ([b[0], b[1], 5000, b[3]] as [number, number, number, number]) : b,
    );
    expect(new Set(native.writeChooserRun(-1, cold).slice(TURNS * TURN))).toEqual(new Set([1]));
  });

  it('holds the choice for 10 s, then samples again and follows a change of costs', () => {
    // io_uring cheaper at first; 11 s later plain writes are.
    const first = bursts(TURNS * TURN, 1000, 700, 0);
    const held = bursts(50, 300, 700, 5000);
    const later = bursts(TURNS * TURN + 20, 300, 700, 11_000);
    const ways = native.writeChooserRun(-1, [...first, ...held, ...later]);
    expect(new Set(ways.slice(TURNS * TURN, TURNS * TURN + 50))).toEqual(new Set([1])); // still held
    const after = ways.slice(TURNS * TURN + 50);
    expect(new Set(after.slice(0, TURN))).toEqual(new Set([1])); // sampling starts where it was
    expect(new Set(after.slice(TURN, 2 * TURN))).toEqual(new Set([0]));
    expect(new Set(after.slice(TURNS * TURN))).toEqual(new Set([0])); // then plain is kept
  });

  it('a fixed way (io-uring=on|off) never moves', () => {
    expect(new Set(native.writeChooserRun(1, bursts(500, 1, 1000)))).toEqual(new Set([1]));
    expect(new Set(native.writeChooserRun(0, bursts(500, 1000, 1)))).toEqual(new Set([0]));
  });
});
