"""binary-trees, max depth 16; same algorithm as benches/programs/binary_trees.kasm."""

import bench


class Node:
    __slots__ = ("left", "right")

    def __init__(self, left, right):
        self.left = left
        self.right = right

    def check(self):
        if self.left is None:
            return 1
        return 1 + self.left.check() + self.right.check()


def make(depth):
    if depth == 0:
        return Node(None, None)
    return Node(make(depth - 1), make(depth - 1))


def run(n):
    min_depth = 4
    max_depth = min_depth + 2 if min_depth + 2 > n else n
    stretch = max_depth + 1
    out = [f"stretch tree of depth {stretch} check: {make(stretch).check()}\n"]
    long_lived = make(max_depth)
    for d in range(min_depth, max_depth + 1, 2):
        iterations = 1 << (max_depth - d + min_depth)
        check = 0
        for _ in range(iterations):
            check += make(d).check()
        out.append(f"{iterations} trees of depth {d} check: {check}\n")
    out.append(f"long lived tree of depth {max_depth} check: {long_lived.check()}\n")
    return "".join(out)


bench.main(16, run)
