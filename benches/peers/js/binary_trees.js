'use strict';
// binary-trees, max depth 16; same algorithm as benches/programs/binary_trees.kasm.
const bench = require('./bench.js');

class Node {
  constructor(left, right) {
    this.left = left;
    this.right = right;
  }

  check() {
    if (this.left === null) return 1;
    return 1 + this.left.check() + this.right.check();
  }
}

function make(depth) {
  if (depth === 0) return new Node(null, null);
  return new Node(make(depth - 1), make(depth - 1));
}

function run(n) {
  const minDepth = 4;
  const maxDepth = minDepth + 2 > n ? minDepth + 2 : n;
  const stretch = maxDepth + 1;
  let out = `stretch tree of depth ${stretch} check: ${make(stretch).check()}\n`;
  const longLived = make(maxDepth);
  for (let d = minDepth; d <= maxDepth; d += 2) {
    const iterations = 1 << (maxDepth - d + minDepth);
    let check = 0;
    for (let i = 1; i <= iterations; i++) check += make(d).check();
    out += `${iterations} trees of depth ${d} check: ${check}\n`;
  }
  out += `long lived tree of depth ${maxDepth} check: ${longLived.check()}\n`;
  return out;
}

bench.main(16, run);
