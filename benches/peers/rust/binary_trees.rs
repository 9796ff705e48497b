// binary-trees, max depth 16 (allocation throughput); same algorithm as
// benches/programs/binary_trees.kasm: heap nodes (Box), recursive make/check.
include!("bench.rs");

struct Node {
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

fn make(depth: i32) -> Box<Node> {
    if depth == 0 {
        return Box::new(Node {
            left: None,
            right: None,
        });
    }
    let left = make(depth - 1);
    let right = make(depth - 1);
    Box::new(Node {
        left: Some(left),
        right: Some(right),
    })
}

fn check(node: &Node) -> i64 {
    match (&node.left, &node.right) {
        (Some(l), Some(r)) => 1 + check(l) + check(r),
        _ => 1,
    }
}

fn run(n: i32) -> String {
    let min_depth = 4;
    let max_depth = if min_depth + 2 > n { min_depth + 2 } else { n };
    let mut out = String::new();
    let stretch = max_depth + 1;
    out.push_str(&format!(
        "stretch tree of depth {} check: {}\n",
        stretch,
        check(&make(stretch))
    ));
    let long_lived = make(max_depth);
    let mut d = min_depth;
    while d <= max_depth {
        let iterations = 1i32 << (max_depth - d + min_depth);
        let mut total: i64 = 0;
        for _ in 0..iterations {
            total += check(&make(d));
        }
        out.push_str(&format!("{iterations} trees of depth {d} check: {total}\n"));
        d += 2;
    }
    out.push_str(&format!(
        "long lived tree of depth {} check: {}\n",
        max_depth,
        check(&long_lived)
    ));
    out
}

fn main() {
    bench_main(16, run);
}
