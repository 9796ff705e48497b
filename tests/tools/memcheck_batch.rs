//! Runs many `kiln run` cases in one process, for valgrind memcheck.
//!
//! Under valgrind most of the cost of one `kiln run` is translating Kiln's
//! own machine code (valgrind translates every basic block the first time
//! it runs, per process) and loading std; running a list of cases in one
//! process pays that once. Each line of the list file (argument 1) is one
//! case, tab-separated: `FILE`, then `NAME=VALUE` environment settings
//! separated by spaces (`KILN_JIT`, `KILN_HEAP_MAX`, `KILN_DEADLINE`, ...;
//! `-` for none), then the program's arguments separated by spaces
//! (optional). Before each case it prints `CASE <n> <FILE>` on stderr and
//! after it `EXIT <n> <code>`, so memcheck's reports (also on stderr) can be
//! attributed to the case that was running.
//!
//! ```text
//! cargo build --release --example memcheck_batch
//! valgrind --error-exitcode=99 -q target/release/examples/memcheck_batch LIST > /dev/null
//! ```
//!
//! Cases that leave threads running after `main` returns, or that rely on
//! the process ending, do not belong in a batch (they keep running in it).

use std::path::Path;

fn main() {
    let list = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: memcheck_batch LIST");
        std::process::exit(2)
    });
    let text = match std::fs::read_to_string(&list) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{list}: cannot read: {e}");
            std::process::exit(2)
        }
    };
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let mut parts = line.split('\t');
        let file = parts.next().unwrap_or("");
        let env: Vec<(String, String)> = parts
            .next()
            .unwrap_or("-")
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = parts
            .next()
            .unwrap_or("")
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        for (k, v) in &env {
            std::env::set_var(k, v);
        }
        eprintln!("CASE {n} {file}");
        let code = match kiln::runtime::Options::from_env() {
            Ok(opts) => kiln::engine::run_file(Path::new(file), &args, &opts),
            Err(msg) => {
                eprintln!("kiln: {msg}");
                2
            }
        };
        eprintln!("EXIT {n} {code}");
        for (k, _) in &env {
            std::env::remove_var(k);
        }
    }
}
