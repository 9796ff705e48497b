"""50,000,000 method calls over a list of three classes (a megamorphic call site);
same algorithm as benches/programs/interface_dispatch.kasm."""

import bench


class Triangle:
    def sides(self):
        return 3


class Square:
    def sides(self):
        return 4


class Pentagon:
    def sides(self):
        return 5


def run(calls):
    shapes = [Triangle(), Square(), Pentagon()]
    total = 0
    k = 0
    for _ in range(calls):
        total += shapes[k].sides()
        k += 1
        if k >= 3:
            k = 0
    return f"{total}\n"


bench.main(50_000_000, run)
