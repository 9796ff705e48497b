'use strict';
// Sieve of Eratosthenes below 10,000,000; same algorithm as benches/programs/sieve.kasm
// (a byte array of flags, marking from i*i).
const bench = require('./bench.js');

function countPrimes(n) {
  const composite = new Uint8Array(n);
  let count = 0;
  for (let i = 2; i < n; i++) {
    if (composite[i]) continue;
    count++;
    if (i * i < n) {
      for (let j = i * i; j < n; j += i) composite[j] = 1;
    }
  }
  return count;
}

bench.main(10000000, (n) => `${countPrimes(n)}\n`);
