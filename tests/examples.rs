//! Runs every Rust program in `examples/` (each checks its own results) in
//! both execution modes, so the examples never rot.

use kiln::{Config, ExecMode};

#[path = "../examples/embedding.rs"]
#[allow(dead_code)]
mod embedding;
#[path = "../examples/exchange.rs"]
#[allow(dead_code)]
mod exchange;
#[path = "../examples/interrupts.rs"]
#[allow(dead_code)]
mod interrupts;
#[path = "../examples/natives.rs"]
#[allow(dead_code)]
mod natives;

fn configs() -> Vec<Config> {
    [ExecMode::Interp, ExecMode::Jit]
        .into_iter()
        .map(|m| {
            let mut c = Config::new();
            c.mode(m);
            c
        })
        .collect()
}

#[test]
fn embedding_example() {
    for c in configs() {
        embedding::run(&c).unwrap();
    }
}

#[test]
fn natives_example() {
    for c in configs() {
        natives::run(&c).unwrap();
    }
}

#[test]
fn interrupts_example() {
    for c in configs() {
        interrupts::run(&c).unwrap();
    }
}

#[test]
fn exchange_example() {
    for c in configs() {
        exchange::run(&c).unwrap();
    }
}

#[test]
fn examples_under_gc_stress() {
    for mut c in configs() {
        c.gc_stress(true);
        embedding::run(&c).unwrap();
        natives::run(&c).unwrap();
        exchange::run(&c).unwrap();
    }
}
