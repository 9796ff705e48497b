import java.util.function.IntFunction;

/**
 * Shared benchmark driver for the Java peers.
 *
 * <p>PROGRAM [size] [reps]: runs {@code run(size)} reps times (default: the benchmark
 * size, once), checks that every repetition returns the same text, prints it once, and,
 * when {@code reps} is given, then prints one {@code iter_ns=N} line per repetition (wall
 * time of that repetition in nanoseconds). The same contract as benches/programs/*.kasm.
 */
final class Bench {
    private Bench() {}

    private static int parse(String s) {
        if (s.isEmpty() || s.length() > 9) return -1;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < '0' || c > '9') return -1;
        }
        return Integer.parseInt(s);
    }

    private static void usage() {
        System.out.println("usage: PROGRAM [size] [reps] (size and reps: positive decimal integers)");
        System.exit(2);
    }

    static void main(String[] args, int defaultSize, IntFunction<String> run) {
        int size = defaultSize;
        int reps = 1;
        if (args.length >= 1) {
            size = parse(args[0]);
            if (size < 1) usage();
        }
        if (args.length >= 2) {
            reps = parse(args[1]);
            if (reps < 1) usage();
        }
        long[] times = new long[reps];
        String first = null;
        for (int r = 0; r < reps; r++) {
            long t0 = System.nanoTime();
            String out = run.apply(size);
            times[r] = System.nanoTime() - t0;
            if (first == null) {
                first = out;
            } else if (!first.equals(out)) {
                System.out.println("error: repetitions gave different results");
                System.exit(1);
            }
        }
        StringBuilder sb = new StringBuilder(first);
        if (args.length >= 2) {
            for (long t : times) sb.append("iter_ns=").append(t).append('\n');
        }
        System.out.print(sb);
        System.out.flush();
    }
}
