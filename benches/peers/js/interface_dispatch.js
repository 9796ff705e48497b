'use strict';
// 50,000,000 method calls over an array of three classes (a megamorphic call
// site); same algorithm as benches/programs/interface_dispatch.kasm.
const bench = require('./bench.js');

class Triangle {
  sides() {
    return 3;
  }
}

class Square {
  sides() {
    return 4;
  }
}

class Pentagon {
  sides() {
    return 5;
  }
}

function run(calls) {
  const shapes = [new Triangle(), new Square(), new Pentagon()];
  let sum = 0;
  let k = 0;
  for (let i = 0; i < calls; i++) {
    sum += shapes[k].sides();
    k++;
    if (k >= 3) k = 0;
  }
  return `${sum}\n`;
}

bench.main(50000000, run);
