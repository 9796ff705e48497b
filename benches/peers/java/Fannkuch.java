/** fannkuch-redux n = 10 (checksum 73196, max flips 38); same algorithm as benches/programs/fannkuch.kasm. */
public final class Fannkuch {
    static String run(int n) {
        int[] perm = new int[n];
        int[] perm1 = new int[n];
        int[] count = new int[n];
        for (int i = 0; i < n; i++) perm1[i] = i;
        int r = n;
        int permCount = 0;
        int maxFlips = 0;
        int checksum = 0;
        outer:
        while (true) {
            while (r != 1) {
                count[r - 1] = r;
                r--;
            }
            System.arraycopy(perm1, 0, perm, 0, n);
            int flips = 0;
            int k;
            while ((k = perm[0]) != 0) {
                int k2 = (k + 1) >> 1;
                for (int i = 0; i < k2; i++) {
                    int t = perm[i];
                    perm[i] = perm[k - i];
                    perm[k - i] = t;
                }
                flips++;
            }
            if (flips > maxFlips) maxFlips = flips;
            checksum += (permCount & 1) == 0 ? flips : -flips;
            while (true) {
                if (r == n) break outer;
                int perm0 = perm1[0];
                for (int i = 0; i < r; i++) perm1[i] = perm1[i + 1];
                perm1[r] = perm0;
                count[r]--;
                if (count[r] > 0) break;
                r++;
            }
            permCount++;
        }
        return checksum + "\nPfannkuchen(" + n + ") = " + maxFlips + "\n";
    }

    public static void main(String[] args) {
        Bench.main(args, 10, Fannkuch::run);
    }
}
