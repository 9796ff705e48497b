// Sieve of Eratosthenes, primes below 10,000,000; same algorithm as
// benches/programs/sieve.kasm (a bool array, marking from i*i).
include!("bench.rs");

fn count_primes(n: i32) -> i32 {
    let mut composite = vec![false; n as usize];
    let mut count = 0;
    let mut i = 2;
    while i < n {
        if !composite[i as usize] {
            count += 1;
            if (i as i64) * (i as i64) < n as i64 {
                let mut j = i * i;
                while j < n {
                    composite[j as usize] = true;
                    j += i;
                }
            }
        }
        i += 1;
    }
    count
}

fn run(n: i32) -> String {
    format!("{}\n", count_primes(n))
}

fn main() {
    bench_main(10_000_000, run);
}
