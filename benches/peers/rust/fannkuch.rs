// fannkuch-redux n = 10 (checksum 73196, max flips 38); same algorithm as
// benches/programs/fannkuch.kasm.
include!("bench.rs");

fn run(n: i32) -> String {
    let n = n as usize;
    let mut perm = vec![0i32; n];
    let mut perm1: Vec<i32> = (0..n as i32).collect();
    let mut count = vec![0i32; n];
    let mut r = n;
    let mut perm_count: i32 = 0;
    let mut max_flips: i32 = 0;
    let mut checksum: i32 = 0;
    'outer: loop {
        while r != 1 {
            count[r - 1] = r as i32;
            r -= 1;
        }
        perm.copy_from_slice(&perm1);
        let mut flips = 0;
        loop {
            let k = perm[0] as usize;
            if k == 0 {
                break;
            }
            let k2 = (k + 1) >> 1;
            for i in 0..k2 {
                perm.swap(i, k - i);
            }
            flips += 1;
        }
        if flips > max_flips {
            max_flips = flips;
        }
        if perm_count & 1 == 0 {
            checksum += flips;
        } else {
            checksum -= flips;
        }
        loop {
            if r == n {
                break 'outer;
            }
            let perm0 = perm1[0];
            for i in 0..r {
                perm1[i] = perm1[i + 1];
            }
            perm1[r] = perm0;
            count[r] -= 1;
            if count[r] > 0 {
                break;
            }
            r += 1;
        }
        perm_count += 1;
    }
    format!("{checksum}\nPfannkuchen({n}) = {max_flips}\n")
}

fn main() {
    bench_main(10, run);
}
