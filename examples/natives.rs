//! Host natives: `native` methods declared in kasm, implemented by Rust
//! closures registered in a `Linker` before loading. Shows typed closures,
//! closures with state, a callback into Kiln through the `Caller`,
//! throwing a Kiln exception, a panic becoming an exception, and the
//! dynamic form over `Value`s.
//!
//! Run with `cargo run --example natives`.

use kiln::{Caller, Config, Error, Linker, Object, Source, Throw, Value, Vm};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

const APP: &str = r#".library app
.class public Host {
  .method public static native log(msg: string)
  .method public static native checked_sqrt(x: f64) -> f64
  .method public static native apply_twice(n: i64) -> i64
  .method public static native broken() -> i64
  .method public static native describe(v: object) -> string
}
.class public App {
  .method public static inc(n: i64) -> i64 {
    ldarg n
    ldc.i64 1
    add
    ret
  }
  .method public static run(x: f64) -> f64 {
    .locals (r: f64)
    ldstr "computing"
    call Host::log
    .try {
      ldarg x
      call Host::checked_sqrt
      stloc r
      leave done
    } catch ArithmeticException {
      pop
      ldc.f64 -1.0
      stloc r
      leave done
    }
  done:
    ldloc r
    ret
  }
}
"#;

/// The example, for a given configuration (the test runs it in both modes).
pub fn run(config: &Config) -> Result<(), Error> {
    let logged = Arc::new(AtomicI64::new(0));
    let mut linker = Linker::new();

    // A closure with state; `String` arguments arrive as Rust strings.
    let counter = Arc::clone(&logged);
    linker.func("Host", "log", move |msg: String| {
        counter.fetch_add(1, Ordering::SeqCst);
        println!("[kiln] {msg}");
    })?;

    // Returning Err(Throw) throws a Kiln exception (catchable in kasm).
    linker.func("Host", "checked_sqrt", |x: f64| -> Result<f64, Throw> {
        if x < 0.0 {
            Err(Throw::new("ArithmeticException", format!("sqrt of {x}")))
        } else {
            Ok(x.sqrt())
        }
    })?;

    // A `&mut Caller` first argument gives access to the Vm: call back in.
    linker.func(
        "Host",
        "apply_twice",
        |c: &mut Caller, n: i64| -> Result<i64, Throw> {
            let inc = c.vm().typed::<(i64,), i64>("App::inc")?;
            Ok(inc.call((inc.call((n,))?,))?)
        },
    )?;

    // A panic never unwinds into Kiln frames: it becomes an `Exception`.
    linker.func("Host", "broken", || -> i64 {
        panic!("this native is broken")
    })?;

    // The dynamic form takes and returns `Value`s.
    linker.func_dynamic("Host", "describe", |c: &mut Caller, args: &[Value]| {
        let text = match &args[0] {
            Value::Null => "null".to_string(),
            Value::Object(o) => format!("a {}", o.class_name()),
            other => other.type_name(),
        };
        Ok(Value::Object(c.vm().new_string(&text)?))
    })?;

    // Built-in natives cannot be rebound.
    assert!(matches!(
        linker.func("Std", "println", |_: String| {}),
        Err(Error::NativeClash { .. })
    ));

    let vm = Vm::new(config, &linker, &[Source::kasm("app", APP)])?;
    assert_eq!(vm.call("App::run", &[Value::F64(16.0)])?, Value::F64(4.0));
    assert_eq!(vm.call("App::run", &[Value::F64(-1.0)])?, Value::F64(-1.0));
    assert_eq!(logged.load(Ordering::SeqCst), 2);
    assert_eq!(
        vm.call("Host::apply_twice", &[Value::I64(40)])?,
        Value::I64(42)
    );

    let err = vm.call("Host::broken", &[]).unwrap_err();
    let exc = err.exception().expect("an exception");
    assert_eq!(exc.class, "Exception");
    assert!(exc.message.contains("this native is broken"));

    let s: Object = vm.new_string("text")?;
    let d = vm.call("Host::describe", &[s.into()])?;
    assert_eq!(d.as_string().as_deref(), Some("a String"));

    // A native the linker does not bind is a load error naming it.
    let missing = Vm::new(config, &Linker::new(), &[Source::kasm("app", APP)]).unwrap_err();
    assert!(
        missing.to_string().contains("Host::log is not bound"),
        "{missing}"
    );
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Error> {
    // Panics inside natives are caught; silence the default hook's report.
    std::panic::set_hook(Box::new(|_| {}));
    run(&Config::from_env()?)
}
