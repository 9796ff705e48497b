/**
 * 50,000,000 interface calls over an array of three classes (a megamorphic call site);
 * same algorithm as benches/programs/interface_dispatch.kasm.
 */
public final class InterfaceDispatch {
    interface Shape {
        long sides();
    }

    static final class Triangle implements Shape {
        public long sides() {
            return 3;
        }
    }

    static final class Square implements Shape {
        public long sides() {
            return 4;
        }
    }

    static final class Pentagon implements Shape {
        public long sides() {
            return 5;
        }
    }

    static String run(int calls) {
        Shape[] shapes = {new Triangle(), new Square(), new Pentagon()};
        long sum = 0;
        int k = 0;
        for (int i = 0; i < calls; i++) {
            sum += shapes[k].sides();
            k++;
            if (k >= 3) k = 0;
        }
        return sum + "\n";
    }

    public static void main(String[] args) {
        Bench.main(args, 50_000_000, InterfaceDispatch::run);
    }
}
