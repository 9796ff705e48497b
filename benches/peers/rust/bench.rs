// Shared benchmark driver, included by every Rust peer with `include!("bench.rs")`.
//
// PROGRAM [size] [reps]: runs `run(size)` reps times (default: the benchmark
// size, once), checks that every repetition returns the same text, prints it
// once, and, when `reps` is given, then prints one `iter_ns=N` line per
// repetition (wall time of that repetition in nanoseconds). This is the same
// contract as benches/programs/*.kasm.

fn parse_arg(s: &str) -> Option<i32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i32>().ok().filter(|&v| v >= 1)
}

fn bench_main(default_size: i32, run: fn(i32) -> String) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        println!("usage: PROGRAM [size] [reps] (size and reps: positive decimal integers)");
        std::process::exit(2);
    };
    let size = match args.first() {
        Some(a) => parse_arg(a).unwrap_or_else(|| usage()),
        None => default_size,
    };
    let reps = match args.get(1) {
        Some(a) => parse_arg(a).unwrap_or_else(|| usage()),
        None => 1,
    };
    let mut times = Vec::with_capacity(reps as usize);
    let mut first: Option<String> = None;
    for _ in 0..reps {
        let t0 = std::time::Instant::now();
        let out = run(std::hint::black_box(size));
        times.push(t0.elapsed().as_nanos());
        match &first {
            None => first = Some(out),
            Some(f) if *f != out => {
                println!("error: repetitions gave different results");
                std::process::exit(1);
            }
            Some(_) => {}
        }
    }
    print!("{}", first.unwrap_or_default());
    if args.len() >= 2 {
        for t in times {
            println!("iter_ns={t}");
        }
    }
}
