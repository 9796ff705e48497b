//! The embedding API (`kiln::host`), end to end, in both execution modes.

use kiln::host::{AttrValue, Mutability, TypeKind, TypeSig};
use kiln::{Caller, Config, Error, ExecMode, Linker, Metadata, Object, Source, Throw, Value, Vm};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const MODES: [ExecMode; 2] = [ExecMode::Interp, ExecMode::Jit];

const APP: &str = r#".library app
.interface Shape {
  .method area() -> f64
}
.class public abstract Base {
  .method public virtual abstract name() -> string
}
.attr Doc("a point", version = 2)
.class public Point : Base implements Shape {
  .attr Units("px")
  .field public mutable x: i64
  .field public mutable y: i64
  .field public tag: string
  .field public mutable flag: bool
  .field public mutable c: char
  .field public static mutable count: i64
  .field public static mutable last: Point
  .property public X: i64 get get_x
  .method public ctor(x: i64, y: i64) {
    ldarg this
    ldarg x
    stfld Point::x
    ldarg this
    ldarg y
    stfld Point::y
    ldarg this
    ldstr "pt"
    stfld Point::tag
    ldsfld Point::count
    ldc.i64 1
    add
    stsfld Point::count
    ret
  }
  .method public get_x() -> i64 {
    ldarg this
    ldfld Point::x
    ret
  }
  .method public area() -> f64 {
    ldarg this
    ldfld Point::x
    ldarg this
    ldfld Point::y
    mul
    conv.f64
    ret
  }
  .method public override name() -> string {
    ldstr "point"
    ret
  }
  .method public sum(other: Point) -> i64 {
    ldarg this
    ldfld Point::x
    ldarg other
    ldfld Point::x
    add
    ret
  }
}
.class public Point3 : Point {
  .method public ctor(x: i64, y: i64) {
    ldarg this
    ldarg x
    ldarg y
    call Point::ctor
    ret
  }
  .method public override name() -> string {
    ldstr "point3"
    ret
  }
}
.class public M {
  .field public static mutable hits: i64
  .method public static cctor() {
    ldc.i64 100
    stsfld M::hits
    ret
  }
  .method public static add(a: i64, b: i64) -> i64 {
    ldarg a
    ldarg b
    add
    ret
  }
  .method public static mix(a: i32, b: f64, c: bool, d: char, e: u8) -> f64 {
    ldarg a
    conv.f64
    ldarg b
    add
    ret
  }
  .method public static div(a: i32, b: i32) -> i32 {
    ldarg a
    ldarg b
    div
    ret
  }
  .method public static outer(a: i32) -> i32 {
    ldarg a
    ldc.i32 0
    call M::div
    ret
  }
  .method public static nothing() {
    ret
  }
  .method public static concat(a: string, b: string) -> string {
    ldarg a
    ldarg b
    call Std::concat
    ret
  }
  .method public static len(a: i64[]) -> i32 {
    ldarg a
    ldlen
    ret
  }
  .method public static deep(n: i64) -> i64 {
    ldarg n
    ldc.i64 0
    beq done
    ldarg n
    ldc.i64 1
    sub
    call M::deep
    ldc.i64 1
    add
    ret
  done:
    ldc.i64 0
    ret
  }
  .method public static alloc(n: i64) -> i64 {
    .locals (i: i64, acc: i64, p: Point)
  top:
    ldloc i
    ldarg n
    bge out
    ldloc i
    ldloc i
    newobj Point::ctor
    stloc p
    ldloc acc
    ldloc p
    ldfld Point::x
    add
    stloc acc
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  out:
    ldloc acc
    ret
  }
}
"#;

fn config(mode: ExecMode) -> Config {
    let mut c = Config::new();
    c.mode(mode).max_heap(256 << 20);
    c
}

fn app(mode: ExecMode) -> Vm {
    Vm::new(&config(mode), &Linker::new(), &[Source::kasm("app", APP)]).unwrap()
}

#[test]
fn dynamic_calls_both_modes() {
    for mode in MODES {
        let vm = app(mode);
        assert_eq!(vm.mode(), mode);
        assert_eq!(
            vm.call("M::add", &[Value::I64(40), Value::I64(2)]).unwrap(),
            Value::I64(42)
        );
        let r = vm
            .call(
                "M::mix",
                &[
                    Value::I32(2),
                    Value::F64(0.5),
                    true.into(),
                    'x'.into(),
                    7u8.into(),
                ],
            )
            .unwrap();
        assert_eq!(r, Value::F64(2.5));
        assert_eq!(vm.call("M::nothing", &[]).unwrap(), Value::Void);
        // cctor ran at load
        assert_eq!(vm.get_static("M::hits").unwrap(), Value::I64(100));
        vm.set_static("M::hits", &Value::I64(5)).unwrap();
        assert_eq!(vm.get_static("M::hits").unwrap(), Value::I64(5));
        let a = vm.new_string("ab").unwrap();
        let b = vm.new_string("cd").unwrap();
        let s = vm.call("M::concat", &[(&a).into(), (&b).into()]).unwrap();
        assert_eq!(s.as_string().unwrap(), "abcd");
        assert_eq!(
            vm.call("M::alloc", &[Value::I64(1000)]).unwrap(),
            Value::I64(499500)
        );
    }
}

#[test]
fn call_errors_are_typed() {
    for mode in MODES {
        let vm = app(mode);
        assert!(matches!(vm.call("Nope::f", &[]), Err(Error::UnknownClass(c)) if c == "Nope"));
        assert!(
            matches!(vm.call("M::nope", &[]), Err(Error::UnknownMethod { method, .. }) if method == "nope")
        );
        assert!(matches!(vm.call("M.add", &[]), Err(Error::BadName(_))));
        // The runtime ran M's static constructor at load; the host cannot
        // run it again (M::hits would be reset to 100).
        vm.set_static("M::hits", &Value::I64(7)).unwrap();
        let e = vm.call("M::cctor", &[]).unwrap_err();
        assert!(matches!(&e, Error::CallCctor(c) if c == "M"), "{e}");
        assert!(e
            .to_string()
            .contains("static constructor `M::cctor` cannot be called"));
        assert_eq!(vm.get_static("M::hits").unwrap(), Value::I64(7));
        assert!(matches!(
            vm.call("M::add", &[Value::I64(1)]),
            Err(Error::ArgumentCount {
                expected: 2,
                found: 1,
                ..
            })
        ));
        let e = vm
            .call("M::add", &[Value::I64(1), Value::F64(1.0)])
            .unwrap_err();
        assert!(
            matches!(&e, Error::ArgumentType { index: 1, expected, found, .. } if expected == "i64" && found == "f64"),
            "{e}"
        );
        assert!(e.to_string().contains("argument 1 must be i64"));
        assert!(matches!(
            vm.call("Point::get_x", &[]),
            Err(Error::WrongMethodKind {
                is_static: false,
                ..
            })
        ));
        let s = vm.new_string("x").unwrap();
        assert!(matches!(
            vm.call("M::len", &[s.into()]),
            Err(Error::ArgumentType { index: 0, .. })
        ));
        // typed signature mismatch
        assert!(matches!(
            vm.typed::<(i64,), i64>("M::add"),
            Err(Error::Signature { .. })
        ));
        assert!(matches!(
            vm.typed::<(i64, i64), f64>("M::add"),
            Err(Error::Signature { .. })
        ));
        let e = vm.typed::<(i32, i64), i64>("M::add").unwrap_err();
        assert!(
            e.to_string().contains("add(a: i64, b: i64) -> i64")
                && e.to_string().contains("fn(i32, i64) -> i64"),
            "{e}"
        );
        assert!(matches!(
            vm.typed::<(), ()>("Point::get_x"),
            Err(Error::WrongMethodKind { .. })
        ));
    }
}

#[test]
fn typed_fast_path() {
    for mode in MODES {
        let vm = app(mode);
        let add = vm.typed::<(i64, i64), i64>("M::add").unwrap();
        let mut acc = 0;
        for i in 0..1000 {
            acc = add.call((acc, i)).unwrap();
        }
        assert_eq!(acc, 499500);
        let concat = vm.typed::<(String, String), String>("M::concat").unwrap();
        assert_eq!(concat.call(("kil".into(), "n".into())).unwrap(), "kiln");
        let nothing = vm.typed::<(), ()>("M::nothing").unwrap();
        nothing.call(()).unwrap();
        let len = vm.typed::<(Object,), i32>("M::len").unwrap();
        let arr = vm.new_array("i64", 7).unwrap();
        assert_eq!(len.call((arr,)).unwrap(), 7);
        let s = vm.new_string("not an array").unwrap();
        assert!(matches!(
            len.call((s,)),
            Err(Error::ArgumentType { index: 0, .. })
        ));
        let div = vm.typed::<(i32, i32), i32>("M::div").unwrap();
        assert_eq!(div.call((7, 2)).unwrap(), 3);
        let e = div.call((1, 0)).unwrap_err();
        assert_eq!(e.exception().unwrap().class, "ArithmeticException");
    }
}

#[test]
fn objects_fields_arrays() {
    for mode in MODES {
        let vm = app(mode);
        let p = vm
            .new_object("Point", &[Value::I64(3), Value::I64(4)])
            .unwrap();
        assert_eq!(p.class_name(), "Point");
        assert_eq!(p.get("x").unwrap(), Value::I64(3));
        assert_eq!(p.get("tag").unwrap().as_string().unwrap(), "pt");
        p.set("x", 10i64).unwrap();
        p.set("flag", true).unwrap();
        p.set("c", 'z').unwrap();
        assert_eq!(p.get("flag").unwrap(), Value::Bool(true));
        assert_eq!(p.get("c").unwrap(), Value::Char('z'));
        assert_eq!(p.call("get_x", &[]).unwrap(), Value::I64(10));
        assert_eq!(p.call("area", &[]).unwrap(), Value::F64(40.0));
        assert!(matches!(p.set("tag", Value::Null), Err(Error::Immutable(f)) if f == "Point::tag"));
        assert!(matches!(p.set("x", 1.5f64), Err(Error::Type { .. })));
        assert!(matches!(p.get("zz"), Err(Error::UnknownField { .. })));
        assert!(matches!(
            p.call("zz", &[]),
            Err(Error::UnknownMethod { .. })
        ));
        // virtual dispatch from the dynamic class
        let q = vm
            .new_object("Point3", &[Value::I64(1), Value::I64(2)])
            .unwrap();
        assert_eq!(q.call("name", &[]).unwrap().as_string().unwrap(), "point3");
        assert_eq!(p.call("name", &[]).unwrap().as_string().unwrap(), "point");
        assert!(q.instance_of("Point").unwrap() && q.instance_of("Shape").unwrap());
        assert!(!p.instance_of("Point3").unwrap());
        assert_eq!(p.call("sum", &[(&q).into()]).unwrap(), Value::I64(11));
        let s = vm.new_string("x").unwrap();
        assert!(matches!(
            p.call("sum", &[s.into()]),
            Err(Error::ArgumentType { .. })
        ));
        // statics of reference type
        vm.set_static("Point::last", &(&q).into()).unwrap();
        assert!(vm
            .get_static("Point::last")
            .unwrap()
            .as_object()
            .unwrap()
            .same(&q));
        assert_eq!(vm.get_static("Point::count").unwrap(), Value::I64(2));
        // abstract / interface
        assert!(matches!(
            vm.new_object("Base", &[]),
            Err(Error::Type { .. })
        ));
        assert!(matches!(
            vm.new_object("Point", &[]),
            Err(Error::ArgumentCount { .. })
        ));
        // arrays
        let a = vm.new_array("f64", 3).unwrap();
        assert!(a.is_array() && !a.is_string());
        a.set_index(1, 2.5f64).unwrap();
        assert_eq!(
            a.to_vec().unwrap(),
            vec![Value::F64(0.0), Value::F64(2.5), Value::F64(0.0)]
        );
        assert!(matches!(
            a.get_index(3),
            Err(Error::IndexOutOfRange { index: 3, len: 3 })
        ));
        assert!(matches!(a.set_index(0, 1i64), Err(Error::Type { .. })));
        let pa = vm.new_array("Point", 2).unwrap();
        pa.set_index(0, &q).unwrap();
        assert_eq!(pa.get_index(1).unwrap(), Value::Null);
        assert!(pa.get_index(0).unwrap().as_object().unwrap().same(&q));
        let sa = vm.new_array("string", 1).unwrap();
        assert!(matches!(sa.set_index(0, &p), Err(Error::Type { .. })));
        assert!(matches!(
            vm.new_array("Nope", 1),
            Err(Error::UnknownClass(_))
        ));
        assert!(matches!(p.len(), Err(Error::Type { .. })));
        assert!(matches!(p.to_str(), Err(Error::Type { .. })));
        // an object of another Vm
        let other = app(mode);
        let o = other
            .new_object("Point", &[Value::I64(1), Value::I64(1)])
            .unwrap();
        assert!(
            matches!(p.call("sum", &[o.into()]), Err(Error::ArgumentType { found, .. }) if found.contains("another Vm"))
        );
    }
}

#[test]
fn uncaught_exception_has_class_message_trace() {
    for mode in MODES {
        let vm = app(mode);
        let e = vm.call("M::outer", &[Value::I32(1)]).unwrap_err();
        let x = e.exception().expect("an exception");
        assert_eq!(x.class, "ArithmeticException");
        assert_eq!(x.message, "integer division by zero");
        assert_eq!(x.trace, vec!["M::div".to_string(), "M::outer".to_string()]);
        let obj = x.object.as_ref().unwrap();
        assert_eq!(
            obj.get("message").unwrap().as_string().unwrap(),
            "integer division by zero"
        );
        assert!(e.to_string().contains("at M::outer"));
        // the Vm is still usable
        assert_eq!(
            vm.call("M::div", &[Value::I32(9), Value::I32(3)]).unwrap(),
            Value::I32(3)
        );
    }
}

const NATIVES: &str = r#".library nat
.class public Host {
  .method public static native add(a: i64, b: i64) -> i64
  .method public static native twice(n: i64) -> i64
  .method public static native fail(msg: string)
  .method public static native boom() -> i32
  .method public static native dynamic(a: i32, s: string) -> string
  .method public static native callback(n: i64) -> i64
}
.class public Counter {
  .field public mutable n: i64
  .method public native bump(by: i64) -> i64
}
.class public Use {
  .method public static sq(n: i64) -> i64 {
    ldarg n
    ldarg n
    mul
    ret
  }
  .method public static add3(a: i64) -> i64 {
    ldarg a
    ldc.i64 3
    call Host::add
    ret
  }
  .method public static catches() -> i32 {
    .try {
      ldstr "bad"
      call Host::fail
      leave no
    } catch ArithmeticException {
      pop
      leave yes
    }
  no:
    ldc.i32 0
    ret
  yes:
    ldc.i32 1
    ret
  }
  .method public static via_callback(n: i64) -> i64 {
    ldarg n
    call Host::callback
    ret
  }
}
"#;

fn natives_linker(calls: Arc<AtomicUsize>) -> Linker {
    let mut l = Linker::new();
    l.func("Host", "add", |a: i64, b: i64| a + b).unwrap();
    let c = Arc::clone(&calls);
    l.func("Host", "twice", move |n: i64| {
        c.fetch_add(1, Ordering::SeqCst);
        n * 2
    })
    .unwrap();
    l.func("Host", "fail", |m: String| -> Result<(), Throw> {
        Err(Throw::new("ArithmeticException", format!("fail: {m}")))
    })
    .unwrap();
    l.func("Host", "boom", || -> i32 { panic!("kaboom") })
        .unwrap();
    l.func_dynamic("Host", "dynamic", |c: &mut Caller, args: &[Value]| {
        let s = format!(
            "{}:{}",
            args[0].as_i32().unwrap(),
            args[1].as_string().unwrap()
        );
        Ok(c.vm().new_string(&s)?.into())
    })
    .unwrap();
    l.func(
        "Host",
        "callback",
        |c: &mut Caller, n: i64| -> Result<i64, Throw> {
            let sq = c.vm().typed::<(i64,), i64>("Use::sq")?;
            let r = sq.call((n,))?;
            Ok(r + c
                .vm()
                .call("Use::add3", &[Value::I64(0)])?
                .as_i64()
                .unwrap())
        },
    )
    .unwrap();
    l.func(
        "Counter",
        "bump",
        |this: Object, by: i64| -> Result<i64, Throw> {
            let n = this.get("n")?.as_i64().unwrap() + by;
            this.set("n", n)?;
            Ok(n)
        },
    )
    .unwrap();
    l
}

#[test]
fn natives_bind_call_throw_panic() {
    for mode in MODES {
        let calls = Arc::new(AtomicUsize::new(0));
        let l = natives_linker(Arc::clone(&calls));
        let vm = Vm::new(&config(mode), &l, &[Source::kasm("nat", NATIVES)]).unwrap();
        assert_eq!(
            vm.call("Use::add3", &[Value::I64(4)]).unwrap(),
            Value::I64(7)
        );
        assert_eq!(
            vm.call("Host::twice", &[Value::I64(4)]).unwrap(),
            Value::I64(8)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // thrown by the native, caught by kasm code
        assert_eq!(vm.call("Use::catches", &[]).unwrap(), Value::I32(1));
        // thrown by the native, uncaught
        let s = vm.new_string("x").unwrap();
        let e = vm.call("Host::fail", &[s.into()]).unwrap_err();
        let x = e.exception().unwrap();
        assert_eq!(
            (x.class.as_str(), x.message.as_str()),
            ("ArithmeticException", "fail: x")
        );
        assert_eq!(x.trace, vec!["Host::fail".to_string()]);
        // a panic becomes an exception
        let e = vm.call("Host::boom", &[]).unwrap_err();
        let x = e.exception().unwrap();
        assert_eq!(x.class, "Exception");
        assert!(
            x.message.contains("Host::boom panicked: kaboom"),
            "{}",
            x.message
        );
        // dynamic
        let s = vm.new_string("y").unwrap();
        let r = vm
            .call("Host::dynamic", &[Value::I32(5), s.into()])
            .unwrap();
        assert_eq!(r.as_string().unwrap(), "5:y");
        // callback into Kiln from a native
        assert_eq!(
            vm.call("Use::via_callback", &[Value::I64(6)]).unwrap(),
            Value::I64(39)
        );
        // instance native
        let c = vm.new_object("Counter", &[]).unwrap();
        assert_eq!(c.call("bump", &[Value::I64(2)]).unwrap(), Value::I64(2));
        assert_eq!(c.call("bump", &[Value::I64(3)]).unwrap(), Value::I64(5));
    }
}

#[test]
fn native_binding_errors() {
    let mut l = Linker::new();
    assert!(matches!(
        l.func("Std", "println", |_s: String| {}),
        Err(Error::NativeClash { .. })
    ));
    l.func("Host", "add", |a: i64, b: i64| a + b).unwrap();
    assert!(matches!(
        l.func("Host", "add", |a: i64| a),
        Err(Error::DuplicateNative { .. })
    ));
    // missing natives: every one named, with its location
    let e = Vm::new(&Config::new(), &l, &[Source::kasm("nat", NATIVES)]).unwrap_err();
    let Error::UnboundNative(sites) = &e else {
        panic!("{e}")
    };
    let names: Vec<String> = sites
        .iter()
        .map(|s| format!("{}::{}", s.class, s.method))
        .collect();
    assert!(
        names.contains(&"Host::boom".to_string()) && names.contains(&"Counter::bump".to_string()),
        "{names:?}"
    );
    assert!(sites.iter().all(|s| s.file == "nat" && s.line > 0));
    assert!(
        e.to_string()
            .contains("nat:5: native method Host::fail is not bound"),
        "{e}"
    );
    // wrong Rust signature
    let mut l = natives_linker(Arc::new(AtomicUsize::new(0)));
    let mut l2 = Linker::new();
    l2.func("Host", "add", |a: i64, b: f64| a + b as i64)
        .unwrap();
    let _ = &mut l;
    let src = ".library s\n.class public Host {\n .method public static native add(a: i64, b: i64) -> i64\n}\n";
    let e = Vm::new(&Config::new(), &l2, &[Source::kasm("s", src)]).unwrap_err();
    assert!(
        matches!(&e, Error::NativeSignature { site, .. } if site.line == 3),
        "{e}"
    );
    assert!(e.to_string().contains("fn(i64, f64) -> i64"), "{e}");
}

#[test]
fn load_errors_are_typed_with_locations() {
    let e = Vm::from_kasm(&Config::new(), "bad", ".library bad\n.class public X {\n .method public static f() -> i32 {\n  ldc.i64 1\n  ret\n }\n .method public static g() -> i32 {\n  ldc.f64 1.0\n  ret\n }\n}\n").unwrap_err();
    let Error::Verification(v) = &e else {
        panic!("{e}")
    };
    assert_eq!(v.len(), 2, "{e}");
    assert!(v
        .iter()
        .all(|x| x.file == "bad" && x.line > 0 && x.class == "X"));
    assert_eq!(v[0].method.as_deref(), Some("f"));
    assert!(
        e.to_string().contains("bad:5:") || e.to_string().contains("bad:4:"),
        "{e}"
    );
    let e = Vm::from_kasm(
        &Config::new(),
        "asm",
        ".library a\n.class public X {\n .method public static f() {\n  frobnicate\n }\n}\n",
    )
    .unwrap_err();
    let Error::Assembly(a) = &e else {
        panic!("{e}")
    };
    assert_eq!(a[0].line, 4);
    assert!(e.to_string().starts_with("asm:4:"), "{e}");
    let e = Vm::new(
        &Config::new(),
        &Linker::new(),
        &[Source::klib("junk.klib", b"KLIBxx".to_vec())],
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Format { file, .. } if file == "junk.klib"),
        "{e}"
    );
    let e = Vm::new(
        &Config::new(),
        &Linker::new(),
        &[Source::file("/nonexistent/x.kasm")],
    )
    .unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
    let e = Vm::from_kasm(
        &Config::new(),
        "imp",
        ".library imp\n.import nowhere_lib\n.class public X {\n}\n",
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Link(_)) && e.to_string().contains("nowhere_lib"),
        "{e}"
    );
    let e = Vm::from_kasm(&Config::new(), "cc", ".library cc\n.class public X {\n .method public static cctor() {\n  ldc.i32 1\n  ldc.i32 0\n  div\n  pop\n  ret\n }\n}\n").unwrap_err();
    assert_eq!(e.exception().unwrap().class, "ArithmeticException");
}

#[test]
fn several_libraries_and_klib_bytes() {
    let base = ".library base\n.class public B {\n .method public static k() -> i64 {\n  ldc.i64 7\n  ret\n }\n}\n";
    let main = ".library main\n.import base\n.class public Main {\n .method public static f() -> i64 {\n  call B::k\n  ldc.i64 1\n  add\n  ret\n }\n}\n";
    let lib = kiln::asm::assemble(base, "base").unwrap();
    let bytes = kiln::format::write(&lib);
    for mode in MODES {
        // importer first: imports are resolved among the given sources
        let vm = Vm::new(
            &config(mode),
            &Linker::new(),
            &[
                Source::kasm("main", main),
                Source::klib("base.klib", bytes.clone()),
            ],
        )
        .unwrap();
        assert_eq!(vm.call("Main::f", &[]).unwrap(), Value::I64(8));
        let libs: Vec<String> = vm
            .metadata()
            .libraries()
            .map(|l| l.name().to_string())
            .collect();
        assert_eq!(libs, vec!["std", "base", "main"]);
    }
    // from files, imports found next to the importer
    let dir = std::env::temp_dir().join(format!("kiln-host-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("base.klib"), &bytes).unwrap();
    std::fs::write(dir.join("main.kasm"), main).unwrap();
    let vm = Vm::new(
        &Config::new(),
        &Linker::new(),
        &[Source::file(dir.join("main.kasm"))],
    )
    .unwrap();
    assert_eq!(vm.call("Main::f", &[]).unwrap(), Value::I64(8));
}

#[test]
fn reflection_only_load() {
    // does not verify: a bad body is fine for reflection
    let src = format!("{APP}\n.class public Broken {{\n .method public static f() -> i32 {{\n  ldc.i64 1\n  ret\n }}\n}}\n");
    let md = Metadata::load(&[Source::kasm("app", src)]).unwrap();
    let p = md.program();
    assert!(p.library("app").is_some() && p.library("std").is_some());
    let point = p.class("Point").unwrap();
    assert_eq!(point.library(), "app");
    assert_eq!(point.kind(), TypeKind::Class);
    assert_eq!(point.parent(), Some("Base"));
    assert_eq!(point.interfaces(), &["Shape".to_string()]);
    let x = point.field("x").unwrap();
    assert_eq!(x.ty(), &TypeSig::Prim(kiln::host::Prim::I64));
    assert_eq!(x.mutability(), Mutability::Mutable);
    assert!(!x.is_static() && point.field("count").unwrap().is_static());
    assert_eq!(
        point.field("tag").unwrap().mutability(),
        Mutability::Immutable
    );
    let fields: Vec<&str> = point.fields().map(|f| f.name()).collect();
    assert_eq!(fields, ["x", "y", "tag", "flag", "c", "count", "last"]);
    let sum = point.method("sum").unwrap();
    assert_eq!(sum.signature(), "sum(other: Point) -> i64");
    assert_eq!(sum.params()[0].name, "other");
    assert!(!sum.is_static());
    let name = point.method("name").unwrap();
    assert!(name.flags().is_override);
    let prop = point.properties().next().unwrap();
    assert_eq!(
        (prop.name(), prop.getter(), prop.setter()),
        ("X", Some("get_x"), None)
    );
    let attrs: Vec<_> = point
        .attributes()
        .iter()
        .chain(point.fields().flat_map(|f| f.attributes()))
        .collect();
    let doc = attrs
        .iter()
        .find(|a| a.name == "Doc")
        .expect("Doc attribute");
    assert_eq!(doc.args[0].value, AttrValue::Str("a point".into()));
    assert_eq!(doc.args[1].name.as_deref(), Some("version"));
    assert_eq!(doc.args[1].value, AttrValue::Int(2));
    assert!(p.class("Point3").unwrap().is_subclass_of("Base"));
    assert_eq!(p.class("Point3").unwrap().all_interfaces(), vec!["Shape"]);
    assert_eq!(p.class("Shape").unwrap().kind(), TypeKind::Interface);
    assert!(p.class("Broken").is_some());
    // a Vm gives the same view
    let vm = app(ExecMode::Interp);
    assert_eq!(
        vm.metadata()
            .class("M")
            .unwrap()
            .method("add")
            .unwrap()
            .signature(),
        "add(a: i64, b: i64) -> i64"
    );
}

#[test]
fn handles_root_objects_under_gc_stress() {
    for mode in MODES {
        let mut c = config(mode);
        c.gc_stress(true);
        let vm = Vm::new(&c, &Linker::new(), &[Source::kasm("app", APP)]).unwrap();
        let before = vm.handle_count();
        let pts: Vec<Object> = (0..50)
            .map(|i| {
                vm.new_object("Point", &[Value::I64(i), Value::I64(-i)])
                    .unwrap()
            })
            .collect();
        let strs: Vec<Object> = (0..50)
            .map(|i| vm.new_string(&format!("s{i}")).unwrap())
            .collect();
        assert_eq!(
            vm.call("M::alloc", &[Value::I64(200)]).unwrap(),
            Value::I64(19900)
        );
        assert!(
            vm.gc_count() > 100,
            "stress mode collects at every allocation"
        );
        for (i, (p, s)) in pts.iter().zip(&strs).enumerate() {
            assert_eq!(p.get("x").unwrap(), Value::I64(i as i64));
            assert_eq!(p.get("tag").unwrap().as_string().unwrap(), "pt");
            assert_eq!(s.to_str().unwrap(), format!("s{i}"));
        }
        assert_eq!(vm.handle_count(), before + 100);
        drop(pts);
        drop(strs);
        assert_eq!(vm.handle_count(), before);
        // typed calls with String arguments allocate under stress too
        let concat = vm.typed::<(String, String), String>("M::concat").unwrap();
        assert_eq!(
            concat.call(("a".repeat(10), "b".into())).unwrap(),
            format!("{}b", "a".repeat(10))
        );
    }
}

#[test]
fn dropped_handle_is_collected() {
    for mode in MODES {
        let vm = app(mode);
        let big = vm.new_array("i64", 1 << 20).unwrap(); // 8 MiB
        big.set_index(5, 5i64).unwrap();
        assert!(vm.collect());
        let held = vm.heap_used();
        assert!(held >= 8 << 20, "{held}");
        assert_eq!(big.get_index(5).unwrap(), Value::I64(5));
        drop(big);
        assert!(vm.collect());
        assert!(
            vm.heap_used() + (8 << 20) <= held,
            "{} vs {held}",
            vm.heap_used()
        );
    }
}

#[test]
fn host_threads_call_concurrently() {
    for mode in MODES {
        let mut c = config(mode);
        c.max_heap(64 << 20);
        let vm = Vm::new(
            &c,
            &natives_linker(Arc::new(AtomicUsize::new(0))),
            &[Source::kasm("app", APP), Source::kasm("nat", NATIVES)],
        )
        .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let vm = vm.clone();
                std::thread::spawn(move || {
                    let add = vm.typed::<(i64, i64), i64>("M::add").unwrap();
                    let keep = vm
                        .new_object("Point", &[Value::I64(t), Value::I64(t)])
                        .unwrap();
                    for i in 0..200 {
                        assert_eq!(add.call((i, t)).unwrap(), i + t);
                        assert_eq!(
                            vm.call("M::alloc", &[Value::I64(300)]).unwrap(),
                            Value::I64(44850)
                        );
                        assert_eq!(
                            vm.call("Use::via_callback", &[Value::I64(t)]).unwrap(),
                            Value::I64(t * t + 3)
                        );
                        if i % 50 == 0 {
                            vm.collect();
                        }
                    }
                    assert_eq!(keep.get("x").unwrap(), Value::I64(t));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(vm.gc_count() > 0);
    }
}

#[test]
fn deep_recursion_on_a_small_host_stack_raises_stack_overflow() {
    for mode in MODES {
        let vm = app(mode);
        let r = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                assert_eq!(
                    vm.call("M::deep", &[Value::I64(100)]).unwrap(),
                    Value::I64(100)
                );
                vm.call("M::deep", &[Value::I64(10_000_000)]).unwrap_err()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            r.exception().unwrap().class,
            "StackOverflowException",
            "{r}"
        );
    }
}

#[test]
fn config_from_vars() {
    let c = Config::from_vars(|n| match n {
        "KILN_JIT" => Some("off".into()),
        "KILN_HEAP_MAX" => Some("64M".into()),
        "KILN_GC_STRESS" => Some("1".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.get_mode(), ExecMode::Interp);
    assert_eq!(c.get_max_heap(), 64 << 20);
    assert!(c.get_gc_stress());
    for (var, val) in [
        ("KILN_JIT", "2"),
        ("KILN_HEAP_MAX", "12Q"),
        ("KILN_GC_STRESS", "yes"),
        ("KILN_GC_LOG", "x"),
    ] {
        let e = Config::from_vars(|n| (n == var).then(|| val.to_string())).unwrap_err();
        assert!(
            matches!(&e, Error::Config { variable, .. } if variable == var),
            "{e}"
        );
        assert!(e.to_string().contains(var));
    }
    assert_eq!(
        Config::from_vars(|_| None).unwrap().get_mode(),
        ExecMode::Jit
    );
}

#[test]
fn natives_throwing_bad_classes_and_nested_vms() {
    for mode in MODES {
        let mut l = Linker::new();
        l.func("H", "notexc", || -> Result<i64, Throw> {
            Err(Throw::new("H", "m"))
        })
        .unwrap();
        l.func("H", "noclass", || -> Result<i64, Throw> {
            Err(Throw::new("Nope", "m"))
        })
        .unwrap();
        let inner = app(mode);
        l.func("H", "other_vm", move || -> Result<i64, Throw> {
            // a native of one Vm calling another Vm on the same thread
            Ok(inner
                .call("M::add", &[Value::I64(1), Value::I64(2)])?
                .as_i64()
                .unwrap())
        })
        .unwrap();
        l.func("H", "rethrow", |c: &mut Caller| -> Result<i64, Throw> {
            // an exception from a callback propagates with `?`
            Ok(c.vm()
                .call("M::div", &[Value::I32(1), Value::I32(0)])?
                .as_i32()
                .unwrap() as i64)
        })
        .unwrap();
        let src = ".library h\n.class public H {\n .method public static native notexc() -> i64\n .method public static native noclass() -> i64\n .method public static native other_vm() -> i64\n .method public static native rethrow() -> i64\n}\n";
        let vm = Vm::new(
            &config(mode),
            &l,
            &[Source::kasm("h", src), Source::kasm("app", APP)],
        )
        .unwrap();
        for (m, want) in [
            ("H::notexc", "H is not a concrete exception class: m"),
            ("H::noclass", "Nope is not a concrete exception class: m"),
        ] {
            let e = vm.call(m, &[]).unwrap_err();
            let x = e.exception().unwrap();
            assert_eq!((x.class.as_str(), x.message.as_str()), ("Exception", want));
        }
        let e = vm.call("H::other_vm", &[]).unwrap_err();
        assert!(e.exception().unwrap().message.contains("another Vm"), "{e}");
        let e = vm.call("H::rethrow", &[]).unwrap_err();
        let x = e.exception().unwrap();
        assert_eq!(x.class, "ArithmeticException");
        assert_eq!(
            x.trace,
            vec!["M::div".to_string(), "H::rethrow".to_string()]
        );
    }
}

const SPIN: &str = r#".library spin
.class public S {
  .field public static mutable caught: i64
  .method public static native started()
  .method public static spin() -> i64 {
    .locals (i: i64)
    call S::started
  top:
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  }
  .method public static spin_caught() -> i64 {
    .try {
      call S::spin
      pop
      leave out
    } catch InterruptedException {
      pop
      ldc.i64 1
      stsfld S::caught
      leave out
    }
  out:
    ldc.i64 7
    ret
  }
  .method public static quick() -> i64 {
    ldc.i64 3
    ret
  }
}
"#;

fn spin_linker(started: Arc<std::sync::atomic::AtomicBool>) -> Linker {
    let mut l = Linker::new();
    l.func("S", "started", move || {
        started.store(true, Ordering::SeqCst)
    })
    .unwrap();
    l
}

/// Interrupt once `started` is set (the call is then inside `S::spin`);
/// returns how many threads the request reached.
fn interrupt_when_started(
    h: kiln::InterruptHandle,
    started: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        while !started.swap(false, Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.interrupt().unwrap()
    })
}

#[test]
fn interrupt_handle_stops_a_loop_without_calls() {
    for mode in MODES {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let vm = Vm::new(
            &config(mode),
            &spin_linker(Arc::clone(&started)),
            &[Source::kasm("spin", SPIN)],
        )
        .unwrap();
        let h = vm.interrupt_handle();
        let t = interrupt_when_started(h.clone(), Arc::clone(&started));
        let e = vm.call("S::spin", &[]).unwrap_err();
        let x = e.exception().unwrap();
        assert_eq!(
            (x.class.as_str(), x.message.as_str()),
            ("InterruptedException", "interrupted")
        );
        assert_eq!(x.trace, vec!["S::spin".to_string()]);
        assert_eq!(t.join().unwrap(), 1);
        // caught by kasm code
        let t = interrupt_when_started(h.clone(), Arc::clone(&started));
        assert_eq!(vm.call("S::spin_caught", &[]).unwrap(), Value::I64(7));
        assert_eq!(vm.get_static("S::caught").unwrap(), Value::I64(1));
        assert_eq!(t.join().unwrap(), 1);
        // the Vm keeps working
        assert_eq!(vm.call("S::quick", &[]).unwrap(), Value::I64(3));
        // a request while no call runs waits for the next call, even of a
        // leaf method (no entry poll: the host entry delivers it), through
        // the dynamic and the typed path, and throws once
        assert_eq!(h.interrupt().unwrap(), 0);
        let e = vm.call("S::quick", &[]).unwrap_err();
        let x = e.exception().unwrap();
        assert_eq!(
            (x.class.as_str(), x.message.as_str()),
            ("InterruptedException", "interrupted")
        );
        assert_eq!(x.trace, vec!["S::quick".to_string()]);
        assert_eq!(vm.call("S::quick", &[]).unwrap(), Value::I64(3));
        let quick = vm.typed::<(), i64>("S::quick").unwrap();
        assert_eq!(h.interrupt().unwrap(), 0);
        let e = quick.call(()).unwrap_err();
        assert_eq!(e.exception().unwrap().class, "InterruptedException");
        assert_eq!(quick.call(()).unwrap(), 3);
        // a dropped Vm's handle does nothing
        drop(vm);
        assert_eq!(h.interrupt().unwrap(), 0);
    }
}

#[test]
fn deadline_limits_each_call() {
    for mode in MODES {
        let mut c = config(mode);
        c.deadline(Some(std::time::Duration::from_millis(100)));
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let vm = Vm::new(&c, &spin_linker(started), &[Source::kasm("spin", SPIN)]).unwrap();
        let t0 = std::time::Instant::now();
        let e = vm.call("S::spin", &[]).unwrap_err();
        let x = e.exception().unwrap();
        assert_eq!(x.class, "InterruptedException");
        assert!(
            x.message.contains("deadline of 100ms exceeded"),
            "{}",
            x.message
        );
        assert!(t0.elapsed() >= std::time::Duration::from_millis(100));
        // per call: the next short call is not affected
        for _ in 0..3 {
            assert_eq!(vm.call("S::quick", &[]).unwrap(), Value::I64(3));
        }
        let spin = vm.typed::<(), i64>("S::spin").unwrap();
        assert_eq!(
            spin.call(()).unwrap_err().exception().unwrap().class,
            "InterruptedException"
        );
        // a deadline interrupts only its own call: short calls on other
        // threads during another call's deadline all succeed
        let vm2 = vm.clone();
        let spinner = std::thread::spawn(move || vm2.call("S::spin", &[]).unwrap_err());
        let quick = vm.typed::<(), i64>("S::quick").unwrap();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_millis(150) {
            assert_eq!(quick.call(()).unwrap(), 3);
        }
        let e = spinner.join().unwrap();
        assert_eq!(e.exception().unwrap().class, "InterruptedException");
    }
    let c = Config::from_vars(|n| (n == "KILN_DEADLINE").then(|| "2s".to_string())).unwrap();
    assert_eq!(c.get_deadline(), Some(std::time::Duration::from_secs(2)));
    let e = Config::from_vars(|n| (n == "KILN_DEADLINE").then(|| "soon".to_string())).unwrap_err();
    assert!(
        matches!(&e, Error::Config { variable, .. } if variable == "KILN_DEADLINE"),
        "{e}"
    );
}

const TREE: &str = r#".library tree
.class public Node {
  .field public mutable value: i64
  .field public mutable name: string
  .field public mutable weights: f64[]
  .field public mutable left: Node
  .field public mutable right: Node
}
.class public Other {
  .field public mutable value: f64
}
.class public Loop {
  .field public mutable next: Loop
}
"#;

#[test]
fn export_import_round_trip_and_errors() {
    for mode in MODES {
        let mut c = config(mode);
        c.gc_stress(true);
        let vm = Vm::new(&c, &Linker::new(), &[Source::kasm("tree", TREE)]).unwrap();
        let root = vm.new_object("Node", &[]).unwrap();
        root.set("value", 1i64).unwrap();
        root.set("name", vm.new_string("root").unwrap()).unwrap();
        let w = vm.new_array("f64", 2).unwrap();
        w.set_index(0, 0.5f64).unwrap();
        w.set_index(1, -2.0f64).unwrap();
        root.set("weights", &w).unwrap();
        let left = vm.new_object("Node", &[]).unwrap();
        left.set("value", 2i64).unwrap();
        root.set("left", &left).unwrap();
        let bytes = root.export().unwrap();
        // into another Vm (another "process")
        let vm2 = Vm::new(&config(mode), &Linker::new(), &[Source::kasm("tree", TREE)]).unwrap();
        let copy = vm2.import("Node", &bytes).unwrap();
        assert_eq!(copy.get("value").unwrap(), Value::I64(1));
        assert_eq!(copy.get("name").unwrap().as_string().unwrap(), "root");
        let cw = copy.get("weights").unwrap();
        assert_eq!(
            cw.as_object().unwrap().to_vec().unwrap(),
            vec![Value::F64(0.5), Value::F64(-2.0)]
        );
        let cl = copy.get("left").unwrap();
        assert_eq!(cl.as_object().unwrap().get("value").unwrap(), Value::I64(2));
        assert_eq!(copy.get("right").unwrap(), Value::Null);
        assert_eq!(copy.export().unwrap(), bytes, "export(import(b)) == b");
        // mismatched class: names the field
        let e = vm2.import("Other", &bytes).unwrap_err();
        assert!(matches!(e, Error::Exchange(_)), "{e}");
        // malformed: every truncation is an error, never a panic
        for n in 0..bytes.len() {
            assert!(matches!(
                vm2.import("Node", &bytes[..n]),
                Err(Error::Exchange(_))
            ));
        }
        assert!(matches!(
            vm2.import("Nope", &bytes),
            Err(Error::UnknownClass(_))
        ));
        // cycles and non-objects cannot be exported
        let a = vm.new_object("Loop", &[]).unwrap();
        a.set("next", &a).unwrap();
        assert!(matches!(a.export(), Err(Error::Exchange(_))));
        assert!(matches!(
            vm.new_string("s").unwrap().export(),
            Err(Error::Exchange(_))
        ));
    }
}

#[test]
fn deep_trace_keeps_both_ends_through_a_native_rethrow() {
    use kiln::vm::thread::{TRACE_MAX, TRACE_TAIL};
    const DEPTH: usize = 3000;
    let src = r#".library deep
.class public D {
  .method public static native again(n: i64) -> i64
  .method public static boom() -> i64 {
    ldc.i64 1
    ldc.i64 0
    div
    ret
  }
  .method public static down(n: i64) -> i64 {
    ldarg n
    brtrue more
    call D::boom
    ret
  more:
    ldarg n
    ldc.i64 1
    sub
    call D::down
    ret
  }
  .method public static top(n: i64) -> i64 {
    ldarg n
    call D::again
    ret
  }
}
"#;
    for mode in MODES {
        let mut l = Linker::new();
        l.func(
            "D",
            "again",
            |c: &mut Caller, n: i64| -> Result<i64, Throw> {
                // the callback's exception is rethrown with its capped trace
                Ok(c.vm().call("D::down", &[Value::I64(n)])?.as_i64().unwrap())
            },
        )
        .unwrap();
        let vm = Vm::new(&config(mode), &l, &[Source::kasm("deep", src)]).unwrap();
        // boom, DEPTH + 1 times down, again, top
        let total = DEPTH + 4;
        // a debug-build interpreter frame is large: give the recursion room
        let (e, vm) = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                (
                    vm.call("D::top", &[Value::I64(DEPTH as i64)]).unwrap_err(),
                    vm,
                )
            })
            .unwrap()
            .join()
            .unwrap();
        let x = e.exception().unwrap();
        assert_eq!(x.class, "ArithmeticException", "{mode:?}");
        assert_eq!(x.trace.len(), TRACE_MAX + TRACE_TAIL, "{mode:?}");
        assert_eq!(
            x.omitted,
            (total - TRACE_MAX - TRACE_TAIL) as u64,
            "{mode:?}"
        );
        assert_eq!(x.omitted_at, TRACE_MAX, "{mode:?}");
        assert_eq!(x.trace[0], "D::boom");
        assert!(x.trace[1..x.trace.len() - 2].iter().all(|t| t == "D::down"));
        assert_eq!(&x.trace[x.trace.len() - 2..], ["D::again", "D::top"]);
        let shown = x.to_string();
        let gap = format!(
            "  at D::down\n  ... {} more frames\n  at D::down",
            x.omitted
        );
        assert!(shown.contains(&gap), "{mode:?}");
        assert!(shown.ends_with("  at D::again\n  at D::top"), "{mode:?}");
        // a shallower trace is kept whole
        let e = vm.call("D::top", &[Value::I64(10)]).unwrap_err();
        let x = e.exception().unwrap();
        assert_eq!((x.trace.len(), x.omitted), (14, 0), "{mode:?}");
    }
}

/// Unbounded recursion that passes through a host native on every level
/// (managed -> native -> `vm.call` -> managed -> ...) ends in a catchable
/// `StackOverflowException`, never a fault on the thread's guard page: each
/// nested host call keeps the limit of the call that encloses it instead of
/// computing a new one from the little stack that is left.
#[test]
fn unbounded_recursion_through_a_native_raises_stack_overflow() {
    let src = r#".library rec
.class public R {
  .method public static native again(n: i64) -> i64
  .method public static down(n: i64) -> i64 {
    ldarg n
    ldc.i64 1
    add
    call R::again
    ret
  }
  .method public static guarded(n: i64) -> i64 {
    .locals (r: i64)
    .try {
      ldarg n
      call R::down
      stloc r
      leave done
    } catch StackOverflowException {
      pop
      ldc.i64 -1
      stloc r
      leave done
    }
  done:
    ldloc r
    ret
  }
}
"#;
    for mode in MODES {
        for stack in [2usize << 20, 8 << 20] {
            let depth = Arc::new(AtomicUsize::new(0));
            let mut l = Linker::new();
            let d = depth.clone();
            l.func(
                "R",
                "again",
                move |c: &mut Caller, n: i64| -> Result<i64, Throw> {
                    d.fetch_max(n as usize, Ordering::Relaxed);
                    Ok(c.vm().call("R::down", &[Value::I64(n)])?.as_i64().unwrap())
                },
            )
            .unwrap();
            let vm = Vm::new(&config(mode), &l, &[Source::kasm("rec", src)]).unwrap();
            let (uncaught, caught, vm) = std::thread::Builder::new()
                .stack_size(stack)
                .spawn(move || {
                    let e = vm.call("R::down", &[Value::I64(0)]).unwrap_err();
                    let c = vm.call("R::guarded", &[Value::I64(0)]);
                    (e, c, vm)
                })
                .unwrap()
                .join()
                .unwrap();
            let x = uncaught.exception().unwrap_or_else(|| panic!("{uncaught}"));
            assert_eq!(x.class, "StackOverflowException", "{mode:?} {stack}");
            assert!(depth.load(Ordering::Relaxed) > 10, "{mode:?} {stack}");
            // caught inside managed code at the bottom-most level it reached
            assert_eq!(caught.unwrap(), Value::I64(-1), "{mode:?} {stack}");
            // and the Vm goes on working on this thread and another
            assert_eq!(
                vm.call("R::guarded", &[Value::I64(0)]).unwrap(),
                Value::I64(-1)
            );
        }
    }
}

/// The natives compiled code computes inline (`ir::Intrinsic`) give bit for
/// bit the result of the native the interpreter calls, on the edge cases:
/// signed zeros, ties, huge and tiny values, infinities (NaN only as NaN).
#[test]
fn math_intrinsics_match_the_natives_bit_for_bit() {
    let src = ".library intr\n.class public P {\n\
        .method public static sqrt(v: f64) -> f64 {\n ldarg v\n call Std::sqrt\n ret\n }\n\
        .method public static floor(v: f64) -> f64 {\n ldarg v\n call Std::floor\n ret\n }\n\
        .method public static ceil(v: f64) -> f64 {\n ldarg v\n call Std::ceil\n ret\n }\n\
        .method public static trunc(v: f64) -> f64 {\n ldarg v\n call Std::trunc\n ret\n }\n\
        .method public static round(v: f64) -> f64 {\n ldarg v\n call Std::round\n ret\n }\n\
        .method public static abs(v: f64) -> f64 {\n ldarg v\n call Std::abs\n ret\n }\n\
        .method public static copysign(v: f64, s: f64) -> f64 {\n ldarg v\n ldarg s\n call Std::copysign\n ret\n }\n}\n";
    let values = [
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        0.49999999999999994,
        4503599627370497.0,
        -4503599627370497.0,
        1e300,
        -1e-300,
        f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        2.0,
    ];
    let run = |mode| {
        let vm = Vm::new(&config(mode), &Linker::new(), &[Source::kasm("intr", src)]).unwrap();
        let mut out = Vec::new();
        for m in ["sqrt", "floor", "ceil", "trunc", "round", "abs"] {
            for &v in &values {
                let r = vm.call(&format!("P::{m}"), &[Value::F64(v)]).unwrap();
                out.push((m, v, r));
            }
        }
        for &v in &values {
            for s in [1.0, -1.0, -0.0] {
                let r = vm
                    .call("P::copysign", &[Value::F64(v), Value::F64(s)])
                    .unwrap();
                out.push(("copysign", v, r));
            }
        }
        out
    };
    let (interp, jit) = (run(ExecMode::Interp), run(ExecMode::Jit));
    assert_eq!(interp.len(), jit.len());
    for ((m, v, a), (_, _, b)) in interp.iter().zip(&jit) {
        let (Value::F64(a), Value::F64(b)) = (a, b) else {
            panic!("{m}({v}): not f64: {a:?} {b:?}");
        };
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{m}({v}): interpreter {a:?}, JIT {b:?}"
        );
    }
}
