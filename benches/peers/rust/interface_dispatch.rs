// 50,000,000 calls through a trait object (dynamic dispatch) over an array of
// three types; same algorithm as benches/programs/interface_dispatch.kasm.
// `black_box` on the array keeps the optimizer from devirtualizing the calls
// (the array's contents are built right before the loop), so this measures a
// real indirect call, as in the other runtimes.
include!("bench.rs");

trait Shape {
    fn sides(&self) -> i64;
}
struct Triangle;
struct Square;
struct Pentagon;
impl Shape for Triangle {
    fn sides(&self) -> i64 {
        3
    }
}
impl Shape for Square {
    fn sides(&self) -> i64 {
        4
    }
}
impl Shape for Pentagon {
    fn sides(&self) -> i64 {
        5
    }
}

fn run(calls: i32) -> String {
    let shapes: Vec<Box<dyn Shape>> =
        vec![Box::new(Triangle), Box::new(Square), Box::new(Pentagon)];
    let shapes = std::hint::black_box(shapes);
    let mut sum: i64 = 0;
    let mut k = 0usize;
    for _ in 0..calls {
        sum += shapes[k].sides();
        k += 1;
        if k >= 3 {
            k = 0;
        }
    }
    format!("{sum}\n")
}

fn main() {
    bench_main(50_000_000, run);
}
