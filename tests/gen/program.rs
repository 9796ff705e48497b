//! Whole-program layout: fixed support classes (`P` printers, `G` statics,
//! `GenError`, the `IVal`/`Base`/`Mid`/`Leaf` hierarchy) around generated
//! helpers (`H`), virtual methods and test functions (`T`), all called from
//! `T::main`. Methods are generated in call-DAG order: helpers may call earlier
//! helpers, instance methods may call helpers, test functions may call helpers
//! and virtual methods; nothing calls a test function except `main`.

use super::method::{Callee, Ctx, Field, MethodGen, CLASSES};
use super::{f64_lit, Dt, Rng};
use std::fmt::Write;

/// Sizes of one generated program.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub helpers: usize,
    pub tests: usize,
    /// Whether the last test function may throw out of `main`.
    pub risky: bool,
}

/// A generated program and what it contains.
pub struct Generated {
    pub seed: u64,
    pub source: String,
    /// Number of generated methods (helpers, virtual overrides, tests, main).
    pub functions: usize,
    pub shape: Shape,
}

/// The print helpers. `P::d` prints an f64 both with 17 decimals and as its
/// exact IEEE bit pattern (computed with exact float scaling, since kasm has
/// no bitcast; NaNs print one canonical pattern).
fn print_class() -> String {
    let p = |e: i32| f64_lit(2f64.powi(e));
    format!(
        r#".class public P {{
  .method public static i(v: i32) {{
    ldarg v
    conv.i64
    call Std::str_i64
    call Std::println
    ret
  }}
  .method public static l(v: i64) {{
    ldarg v
    call Std::str_i64
    call Std::println
    ret
  }}
  .method public static u(v: u64) {{
    ldarg v
    call Std::str_u64
    call Std::println
    ret
  }}
  .method public static b(v: bool) {{
    ldarg v
    call Std::str_bool
    call Std::println
    ret
  }}
  .method public static c(v: char) {{
    ldarg v
    call Std::str_char
    call Std::println
    ret
  }}
  .method public static f(v: f32) {{
    ldarg v
    conv.f64
    call P::d
    ret
  }}
  .method public static d(v: f64) {{
    ldarg v
    ldc.i32 17
    call Std::str_f64
    ldstr " #"
    call Std::concat
    ldarg v
    call P::bits
    call Std::str_u64
    call Std::concat
    call Std::println
    ret
  }}
  .method public static bits(v: f64) -> u64 {{
    .locals (a: f64, e: i32, s: i64, m: i64, be: i32)
    ldarg v
    ldarg v
    beq notnan
    ldc.i64 0x7ff8000000000000
    ret
  notnan:
    ldc.i64 0
    stloc s
    ldarg v
    ldc.f64 0.0
    blt negative
    ldarg v
    ldc.f64 0.0
    bne positive
    ldc.f64 1.0
    ldarg v
    div
    ldc.f64 0.0
    bge positive
  negative:
    ldc.i64 0x8000000000000000
    stloc s
  positive:
    ldarg v
    stloc a
    ldloc a
    ldc.f64 0.0
    bge absolute
    ldloc a
    neg
    stloc a
  absolute:
    ldloc a
    ldc.f64 inf
    bne finite
    ldloc s
    ldc.i64 0x7ff0000000000000
    or
    ret
  finite:
    ldloc a
    ldc.f64 0.0
    bne nonzero
    ldloc s
    ret
  nonzero:
    ldc.i32 0
    stloc e
  big:
    ldloc a
    ldc.f64 {p120}
    blt big1
    ldloc a
    ldc.f64 {pm64}
    mul
    stloc a
    ldloc e
    ldc.i32 64
    add
    stloc e
    br big
  big1:
    ldloc a
    ldc.f64 {p53}
    blt small
    ldloc a
    ldc.f64 0.5
    mul
    stloc a
    ldloc e
    ldc.i32 1
    add
    stloc e
    br big1
  small:
    ldloc a
    ldc.f64 {pm12}
    bge small1
    ldloc a
    ldc.f64 {p64}
    mul
    stloc a
    ldloc e
    ldc.i32 64
    sub
    stloc e
    br small
  small1:
    ldloc a
    ldc.f64 {p52}
    bge normal
    ldloc a
    ldc.f64 2.0
    mul
    stloc a
    ldloc e
    ldc.i32 1
    sub
    stloc e
    br small1
  normal:
    ldloc a
    conv.i64
    stloc m
    ldloc e
    ldc.i32 1075
    add
    stloc be
    ldloc be
    ldc.i32 0
    bgt exponent
    ldloc s
    ldloc m
    ldc.i32 1
    ldloc be
    sub
    shr.un
    or
    ret
  exponent:
    ldloc s
    ldloc be
    conv.i64
    ldc.i32 52
    shl
    or
    ldloc m
    ldc.i64 0xFFFFFFFFFFFFF
    and
    or
    ret
  }}
}}
"#,
        p120 = p(120),
        pm64 = p(-64),
        p53 = p(53),
        pm12 = p(-12),
        p64 = p(64),
        p52 = p(52),
    )
}

const GEN_ERROR: &str = r#".class public GenError : Exception {
  .field public code: i64
  .method public ctor(message: string, code: i64) {
    ldarg this
    ldarg message
    call Exception::ctor
    ldarg this
    ldarg code
    stfld GenError::code
    ret
  }
}
"#;

fn random_dts(rng: &mut Rng, lo: u32, hi: u32) -> Vec<Dt> {
    (0..rng.range(lo, hi))
        .map(|_| *rng.pick(&Dt::ALL))
        .collect()
}

fn params_text(names: &[(String, Dt)]) -> String {
    names
        .iter()
        .map(|(n, d)| format!("{n}: {}", d.kasm()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn named(params: &[Dt]) -> Vec<(String, Dt)> {
    params
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("p{i}"), *d))
        .collect()
}

fn ret_text(ret: Option<Dt>) -> String {
    ret.map(|r| format!(" -> {}", r.kasm())).unwrap_or_default()
}

/// Generates the program for `seed`.
pub fn program(seed: u64) -> Generated {
    let mut rng = Rng::new(seed);
    let shape = Shape {
        helpers: rng.range(4, 10) as usize,
        tests: rng.range(20, 32) as usize,
        risky: rng.pct(25),
    };
    let mut out = String::new();
    let mut functions = 0usize;
    writeln!(out, ".library diff_{seed}\n").unwrap();
    out.push_str(".interface IVal {\n  .method val(x: i64) -> i64\n}\n\n");
    out.push_str(GEN_ERROR);
    out.push('\n');
    out.push_str(&print_class());
    out.push('\n');

    // Statics and the cctor.
    let statics: Vec<Field> = (0..rng.range(2, 6))
        .map(|i| Field {
            qname: format!("G::s{i}"),
            dt: *rng.pick(&Dt::ALL),
        })
        .collect();
    let mut ctx = Ctx {
        statics: statics.clone(),
        ..Default::default()
    };
    {
        out.push_str(".class public G {\n");
        for f in &statics {
            let n = f.qname.trim_start_matches("G::");
            writeln!(out, "  .field public static mutable {n}: {}", f.dt.kasm()).unwrap();
        }
        out.push_str("  .field public static mutable acnt: atomic i64\n");
        out.push_str("  .field public static mutable au: atomic u64\n");
        out.push_str("  .field public static mutable ab: atomic bool\n");
        let cctx = Ctx {
            statics: statics.clone(),
            ..Default::default()
        };
        let mut mg = MethodGen::new(&mut rng, &cctx, &[], false, false, 1000, "cctor");
        for f in &statics {
            if mg.rng.pct(70) {
                mg.expr(f.dt.st(), 1);
                mg.emit(format!("stsfld {}", f.qname));
            }
        }
        mg.finish(None);
        writeln!(
            out,
            "  .method public static cctor() {{\n{}  }}\n}}\n",
            mg.body()
        )
        .unwrap();
    }

    // Helpers, each may call the earlier ones.
    let mut helper_text = String::from(".class public H {\n");
    for k in 0..shape.helpers {
        let params = named(&random_dts(&mut rng, 0, 4));
        let ret = if rng.pct(80) {
            Some(*rng.pick(&Dt::ALL))
        } else {
            None
        };
        let mut mg = MethodGen::new(&mut rng, &ctx, &params, false, false, 60, &format!("h{k}"));
        let (sc, ar) = (mg.rng.range(0, 3) as usize, mg.rng.range(0, 1) as usize);
        mg.setup_locals(sc, ar, 0);
        let (n, depth) = (mg.rng.range(2, 5) as usize, mg.rng.range(1, 2));
        mg.stmts(n, depth);
        mg.finish(ret);
        let cost = mg.cost + 2;
        writeln!(
            helper_text,
            "  .method public static h{k}({}){} {{\n{}  }}",
            params_text(&params),
            ret_text(ret),
            mg.body()
        )
        .unwrap();
        drop(mg);
        functions += 1;
        ctx.helpers.push(Callee {
            name: format!("H::h{k}"),
            params: params.iter().map(|p| p.1).collect(),
            ret,
            cost,
        });
    }
    helper_text.push_str("}\n\n");
    out.push_str(&helper_text);

    // The class hierarchy: fields, ctor, virtual methods.
    let ctor_params = random_dts(&mut rng, 1, 3);
    let mut fields: Vec<Field> = ctor_params
        .iter()
        .enumerate()
        .map(|(i, d)| Field {
            qname: format!("Base::f{i}"),
            dt: *d,
        })
        .collect();
    for i in fields.len()..rng.range(4, 7) as usize {
        fields.push(Field {
            qname: format!("Base::f{i}"),
            dt: *rng.pick(&Dt::ALL),
        });
    }
    ctx.fields = fields.clone();
    ctx.ctor_params = ctor_params.clone();
    let vm_params = random_dts(&mut rng, 0, 3);
    let vm_ret = *rng.pick(&Dt::ALL);
    let ctor_named = named(&ctor_params);
    let mut vm_cost = 0u64;
    let mut val_cost = 0u64;
    let gen_virtual =
        |rng: &mut Rng, ctx: &Ctx, class: &str, name: &str, params: &[(String, Dt)], ret: Dt| {
            let mut mg = MethodGen::new(
                rng,
                ctx,
                params,
                true,
                false,
                50,
                &format!("{class}.{name}"),
            );
            let sc = mg.rng.range(0, 2) as usize;
            mg.setup_locals(sc, 0, 0);
            let n = mg.rng.range(1, 4) as usize;
            mg.stmts(n, 1);
            mg.finish(Some(ret));
            (mg.body(), mg.cost + 2)
        };
    let vm_named = named(&vm_params);
    let val_named = vec![("x".to_string(), Dt::I64)];
    for (ci, class) in CLASSES.iter().enumerate() {
        match ci {
            0 => writeln!(out, ".class public {class} implements IVal {{").unwrap(),
            _ => writeln!(out, ".class public {class} : {} {{", CLASSES[ci - 1]).unwrap(),
        }
        if ci == 0 {
            for f in &fields {
                let n = f.qname.trim_start_matches("Base::");
                writeln!(out, "  .field public mutable {n}: {}", f.dt.kasm()).unwrap();
            }
            out.push_str("  .field public mutable af: atomic u8\n");
        }
        // ctor
        writeln!(
            out,
            "  .method public ctor({}) {{",
            params_text(&ctor_named)
        )
        .unwrap();
        if ci == 0 {
            for (i, (n, _)) in ctor_named.iter().enumerate() {
                writeln!(out, "    ldarg this\n    ldarg {n}\n    stfld Base::f{i}").unwrap();
            }
        } else {
            out.push_str("    ldarg this\n");
            for (n, _) in &ctor_named {
                writeln!(out, "    ldarg {n}").unwrap();
            }
            writeln!(out, "    call {}::ctor", CLASSES[ci - 1]).unwrap();
            let f = rng.pick(&fields).clone();
            let empty = Ctx::default();
            let mut mg = MethodGen::new(&mut rng, &empty, &[], false, false, 10, "ctor");
            mg.expr(f.dt.st(), 1);
            out.push_str("    ldarg this\n");
            out.push_str(&mg.body());
            writeln!(out, "    stfld {}", f.qname).unwrap();
        }
        out.push_str("    ret\n  }\n");
        // tag
        let modifier = if ci == 0 { "virtual" } else { "override" };
        writeln!(
            out,
            "  .method public {modifier} tag() -> i32 {{\n    ldc.i32 {}\n    ret\n  }}",
            ci + 1
        )
        .unwrap();
        // vm: overridden everywhere; val: in Base and Leaf.
        let (body, cost) = gen_virtual(&mut rng, &ctx, class, "vm", &vm_named, vm_ret);
        vm_cost = vm_cost.max(cost);
        writeln!(
            out,
            "  .method public {modifier} vm({}) -> {} {{\n{}  }}",
            params_text(&vm_named),
            vm_ret.kasm(),
            body
        )
        .unwrap();
        functions += 1;
        if ci != 1 {
            let (body, cost) = gen_virtual(&mut rng, &ctx, class, "val", &val_named, Dt::I64);
            val_cost = val_cost.max(cost);
            writeln!(
                out,
                "  .method public {modifier} val(x: i64) -> i64 {{\n{body}  }}"
            )
            .unwrap();
            functions += 1;
        }
        out.push_str("}\n\n");
    }
    ctx.virtuals = vec![
        Callee {
            name: "Base::vm".into(),
            params: vm_params.clone(),
            ret: Some(vm_ret),
            cost: vm_cost,
        },
        Callee {
            name: "IVal::val".into(),
            params: vec![Dt::I64],
            ret: Some(Dt::I64),
            cost: val_cost,
        },
        Callee {
            name: "Base::val".into(),
            params: vec![Dt::I64],
            ret: Some(Dt::I64),
            cost: val_cost,
        },
        Callee {
            name: "Base::tag".into(),
            params: vec![],
            ret: Some(Dt::I32),
            cost: 1,
        },
    ];

    // Test functions.
    out.push_str(".class public T {\n");
    let mut tests = Vec::new();
    let total = shape.tests + usize::from(shape.risky);
    for k in 0..total {
        let risky = k == shape.tests;
        let params = named(&random_dts(&mut rng, 0, 3));
        let ret = if rng.pct(50) {
            Some(*rng.pick(&Dt::ALL))
        } else {
            None
        };
        let mut mg = MethodGen::new(
            &mut rng,
            &ctx,
            &params,
            false,
            risky,
            1500,
            &format!("t{k}"),
        );
        let sc = mg.rng.range(1, 5) as usize;
        let ar = mg.rng.range(0, 3) as usize;
        let ob = mg.rng.range(0, 2) as usize;
        mg.setup_locals(sc, ar, ob);
        let (n, depth) = (mg.rng.range(4, 10) as usize, mg.rng.range(2, 3));
        mg.stmts(n, depth);
        mg.finish(ret);
        writeln!(
            out,
            "  .method public static t{k}({}){} {{\n    ldstr \"== t{k}\"\n    call Std::println\n{}  }}",
            params_text(&params),
            ret_text(ret),
            mg.body()
        )
        .unwrap();
        functions += 1;
        tests.push(Callee {
            name: format!("T::t{k}"),
            params: params.iter().map(|p| p.1).collect(),
            ret,
            cost: 0,
        });
    }
    // main
    let mctx = Ctx {
        statics: statics.clone(),
        ..Default::default()
    };
    let mut mg = MethodGen::new(&mut rng, &mctx, &[], false, false, u64::MAX / 2, "main");
    for t in &tests {
        mg.call_and_print(t, 0);
    }
    mg.finish(Some(Dt::I32));
    writeln!(
        out,
        "  .method public static main() -> i32 {{\n{}  }}\n}}",
        mg.body()
    )
    .unwrap();
    functions += 1;
    Generated {
        seed,
        source: out,
        functions,
        shape,
    }
}
