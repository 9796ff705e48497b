//! Embedding Kiln: load a library from kasm text, look at its metadata,
//! call methods with dynamic values and through a typed fast path, work
//! with objects, strings and arrays, and handle an uncaught exception.
//!
//! Run with `cargo run --example embedding` (`KILN_JIT=0` for the
//! interpreter). `cargo test` runs it in both modes (`tests/examples.rs`).

use kiln::{Config, Error, Linker, Source, Value, Vm};

const GEOMETRY: &str = r#".library geometry
.attr Doc("a 2-D vector", version = 1)
.class public Vec2 {
  .field public mutable x: f64
  .field public mutable y: f64
  .method public ctor(x: f64, y: f64) {
    ldarg this
    ldarg x
    stfld Vec2::x
    ldarg this
    ldarg y
    stfld Vec2::y
    ret
  }
  .method public dot(o: Vec2) -> f64 {
    ldarg this
    ldfld Vec2::x
    ldarg o
    ldfld Vec2::x
    mul
    ldarg this
    ldfld Vec2::y
    ldarg o
    ldfld Vec2::y
    mul
    add
    ret
  }
}
.class public Geo {
  .method public static fib(n: i64) -> i64 {
    ldarg n
    ldc.i64 2
    blt small
    ldarg n
    ldc.i64 1
    sub
    call Geo::fib
    ldarg n
    ldc.i64 2
    sub
    call Geo::fib
    add
    ret
  small:
    ldarg n
    ret
  }
  .method public static sum(xs: f64[]) -> f64 {
    .locals (i: i32, acc: f64)
  top:
    ldloc i
    ldarg xs
    ldlen
    bge done
    ldloc acc
    ldarg xs
    ldloc i
    ldelem f64
    add
    stloc acc
    ldloc i
    ldc.i32 1
    add
    stloc i
    br top
  done:
    ldloc acc
    ret
  }
  .method public static greet(name: string) -> string {
    ldstr "hello, "
    ldarg name
    call Std::concat
    ret
  }
  .method public static ratio(a: i32, b: i32) -> i32 {
    ldarg a
    ldarg b
    div
    ret
  }
}
"#;

/// The example, for a given configuration (the test runs it in both modes).
pub fn run(config: &Config) -> Result<(), Error> {
    // 1. Load: verify, build the runtime tables, run the cctors.
    let vm = Vm::new(
        config,
        &Linker::new(),
        &[Source::kasm("geometry", GEOMETRY)],
    )?;

    // 2. Reflect.
    let md = vm.metadata();
    let vec2 = md.class("Vec2").expect("Vec2 is defined");
    let fields: Vec<String> = vec2
        .fields()
        .map(|f| format!("{}: {}", f.name(), f.ty()))
        .collect();
    assert_eq!(fields, ["x: f64", "y: f64"]);
    assert_eq!(
        vec2.method("dot").unwrap().signature(),
        "dot(o: Vec2) -> f64"
    );
    println!("Vec2 fields: {fields:?}");

    // 3. Call with dynamic values...
    let r = vm.call("Geo::fib", &[Value::I64(20)])?;
    assert_eq!(r, Value::I64(6765));
    // ...or through a typed method, checked once, then called directly.
    let fib = vm.typed::<(i64,), i64>("Geo::fib")?;
    assert_eq!(fib.call((25,))?, 75025);
    let greet = vm.typed::<(String,), String>("Geo::greet")?;
    assert_eq!(greet.call(("kiln".to_string(),))?, "hello, kiln");

    // 4. Objects, fields, instance methods, arrays.
    let a = vm.new_object("Vec2", &[Value::F64(1.0), Value::F64(2.0)])?;
    let b = vm.new_object("Vec2", &[3.0f64.into(), 4.0f64.into()])?;
    assert_eq!(a.call("dot", &[(&b).into()])?, Value::F64(11.0));
    a.set("x", 10.0f64)?;
    assert_eq!(a.get("x")?, Value::F64(10.0));
    let xs = vm.new_array("f64", 4)?;
    for i in 0..4 {
        xs.set_index(i, i as f64 + 0.5)?;
    }
    assert_eq!(vm.call("Geo::sum", &[(&xs).into()])?, Value::F64(8.0));

    // 5. An exception nobody catches comes back as an error with its trace.
    let err = vm
        .call("Geo::ratio", &[Value::I32(1), Value::I32(0)])
        .unwrap_err();
    let exc = err.exception().expect("an exception");
    assert_eq!(exc.class, "ArithmeticException");
    assert_eq!(exc.trace, ["Geo::ratio"]);
    println!("caught: {err}");

    // 6. Typed errors for mistakes at the boundary.
    assert!(matches!(
        vm.call("Geo::fib", &[Value::F64(1.0)]),
        Err(Error::ArgumentType { .. })
    ));
    assert!(matches!(
        vm.typed::<(i32,), i64>("Geo::fib"),
        Err(Error::Signature { .. })
    ));
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Error> {
    run(&Config::from_env()?)
}
