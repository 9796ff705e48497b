'use strict';
// Shared benchmark driver for the JavaScript peers.
//
// PROGRAM [size] [reps]: runs run(size) reps times (default: the benchmark size,
// once), checks that every repetition returns the same text, prints it once,
// and, when reps is given, then prints one `iter_ns=N` line per repetition
// (wall time of that repetition in nanoseconds). The same contract as
// benches/programs/*.kasm.

function parse(s) {
  if (!/^[0-9]{1,9}$/.test(s)) return -1;
  return parseInt(s, 10);
}

function usage() {
  process.stdout.write('usage: PROGRAM [size] [reps] (size and reps: positive decimal integers)\n');
  process.exit(2);
}

function main(defaultSize, run) {
  const args = process.argv.slice(2);
  let size = defaultSize;
  let reps = 1;
  if (args.length >= 1) {
    size = parse(args[0]);
    if (size < 1) usage();
  }
  if (args.length >= 2) {
    reps = parse(args[1]);
    if (reps < 1) usage();
  }
  const times = [];
  let first = null;
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    const out = run(size);
    times.push(process.hrtime.bigint() - t0);
    if (first === null) {
      first = out;
    } else if (first !== out) {
      process.stdout.write('error: repetitions gave different results\n');
      process.exit(1);
    }
  }
  let text = first;
  if (args.length >= 2) {
    for (const t of times) text += `iter_ns=${t}\n`;
  }
  process.stdout.write(text);
}

module.exports = { main };
