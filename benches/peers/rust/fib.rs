// Recursive fib(32) (call overhead); same algorithm as benches/programs/fib.kasm.
include!("bench.rs");

fn fib(n: i64) -> i64 {
    if n < 2 {
        return n;
    }
    fib(n - 1) + fib(n - 2)
}

fn run(n: i32) -> String {
    format!("{}\n", fib(n as i64))
}

fn main() {
    bench_main(32, run);
}
