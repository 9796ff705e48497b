'use strict';
// Recursive fib(32) (call overhead); same algorithm as benches/programs/fib.kasm.
const bench = require('./bench.js');

function fib(n) {
  if (n < 2) return n;
  return fib(n - 1) + fib(n - 2);
}

bench.main(32, (n) => `${fib(n)}\n`);
