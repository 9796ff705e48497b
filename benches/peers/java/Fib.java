/** Recursive fib(32) (call overhead); same algorithm as benches/programs/fib.kasm. */
public final class Fib {
    static long fib(long n) {
        if (n < 2) return n;
        return fib(n - 1) + fib(n - 2);
    }

    static String run(int n) {
        return fib(n) + "\n";
    }

    public static void main(String[] args) {
        Bench.main(args, 32, Fib::run);
    }
}
