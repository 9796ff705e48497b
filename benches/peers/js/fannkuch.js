'use strict';
// fannkuch-redux n = 10 (checksum 73196, max flips 38); same algorithm as
// benches/programs/fannkuch.kasm.
const bench = require('./bench.js');

function run(n) {
  const perm = new Int32Array(n);
  const perm1 = new Int32Array(n);
  const count = new Int32Array(n);
  for (let i = 0; i < n; i++) perm1[i] = i;
  let r = n;
  let permCount = 0;
  let maxFlips = 0;
  let checksum = 0;
  outer:
  for (;;) {
    while (r !== 1) {
      count[r - 1] = r;
      r--;
    }
    perm.set(perm1);
    let flips = 0;
    let k;
    while ((k = perm[0]) !== 0) {
      const k2 = (k + 1) >> 1;
      for (let i = 0; i < k2; i++) {
        const t = perm[i];
        perm[i] = perm[k - i];
        perm[k - i] = t;
      }
      flips++;
    }
    if (flips > maxFlips) maxFlips = flips;
    checksum += (permCount & 1) === 0 ? flips : -flips;
    for (;;) {
      if (r === n) break outer;
      const perm0 = perm1[0];
      for (let i = 0; i < r; i++) perm1[i] = perm1[i + 1];
      perm1[r] = perm0;
      count[r]--;
      if (count[r] > 0) break;
      r++;
    }
    permCount++;
  }
  return `${checksum}\nPfannkuchen(${n}) = ${maxFlips}\n`;
}

bench.main(10, run);
