/** binary-trees, max depth 16; same algorithm as benches/programs/binary_trees.kasm. */
public final class BinaryTrees {
    static final class Node {
        final Node left, right;

        Node(Node left, Node right) {
            this.left = left;
            this.right = right;
        }

        long check() {
            if (left == null) return 1;
            return 1 + left.check() + right.check();
        }
    }

    static Node make(int depth) {
        if (depth == 0) return new Node(null, null);
        return new Node(make(depth - 1), make(depth - 1));
    }

    static String run(int n) {
        int minDepth = 4;
        int maxDepth = minDepth + 2 > n ? minDepth + 2 : n;
        StringBuilder out = new StringBuilder();
        int stretch = maxDepth + 1;
        out.append("stretch tree of depth ").append(stretch).append(" check: ")
                .append(make(stretch).check()).append('\n');
        Node longLived = make(maxDepth);
        for (int d = minDepth; d <= maxDepth; d += 2) {
            int iterations = 1 << (maxDepth - d + minDepth);
            long check = 0;
            for (int i = 1; i <= iterations; i++) check += make(d).check();
            out.append(iterations).append(" trees of depth ").append(d).append(" check: ")
                    .append(check).append('\n');
        }
        out.append("long lived tree of depth ").append(maxDepth).append(" check: ")
                .append(longLived.check()).append('\n');
        return out.toString();
    }

    public static void main(String[] args) {
        Bench.main(args, 16, BinaryTrees::run);
    }
}
