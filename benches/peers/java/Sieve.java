/** Sieve of Eratosthenes below 10,000,000; same algorithm as benches/programs/sieve.kasm. */
public final class Sieve {
    static int countPrimes(int n) {
        boolean[] composite = new boolean[n];
        int count = 0;
        for (int i = 2; i < n; i++) {
            if (composite[i]) continue;
            count++;
            if ((long) i * (long) i < (long) n) {
                for (int j = i * i; j < n; j += i) composite[j] = true;
            }
        }
        return count;
    }

    static String run(int n) {
        return countPrimes(n) + "\n";
    }

    public static void main(String[] args) {
        Bench.main(args, 10_000_000, Sieve::run);
    }
}
