//! Unit tests of the lexer, the parser, the disassembler and the round trip.

use super::lexer::{lex, Tok};
use super::*;
use crate::bytecode::{decode_all, Insn, Op, Operand};
use crate::library::*;

/// A program touching every directive and every operand form.
const FULL: &str = r#"
.library geometry                 ; exactly one, first
.import other

.interface Shape {
  .method area() -> f64
}
.interface Named : Shape, Runnable {
  .method public name() -> string
}

.attr Doc("a circle", version = 2, ratio = -1.5e3, ok = true, c = '\u{1F600}')
.class public sealed Circle : Object implements Shape, Named {
  .attr Doc("radius")
  .field public r: f64
  .field private mutable hits: i64
  .field public mutable(self) area_cache: f64
  .field private mutable(self) secret: u8
  .field public static mutable count: atomic i64
  .field protected grid: i64[][]
  .field public names: string[]
  .field public any: object
  .property public R: f64 get get_r
  .property protected P: i64 get get_r set set_p

  .method public ctor(r: f64) {
    ldarg this
    ldarg r
    stfld Circle::r
    ret
  }
  .method public virtual area() -> f64 {
    ldarg 0
    ldfld Circle::r
    dup
    mul
    ldc.f64 3.141592653589793
    mul
    ret
  }
  .method public name() -> string { ldstr "circle" ret }
  .method public get_r() -> f64 {
    ldarg this
    ldfld Circle::r
    ret
  }
  .method public set_p(v: i64) { ret }
  .method public static cctor() {
    ldc.i64 0
    stsfld Circle::count
    ret
  }
  .method public run() { ret }
}

.class public abstract Base { .method public abstract f() -> i64 }
.class public Derived : Base { .method public override f() -> i64 { ldc.i64 -9223372036854775808 ret } }

.class public Host {
  .method public static native clock_ns() -> i64
}

.class public Program {
  .method public static main(args: string[]) -> i32 {
    .locals (i: i64, acc: f64, c: Circle, s: string, ch: char, b: bool, f: f32, arr: i64[])
    ldc.i32 -2147483648
    pop
    ldc.i32 4294967295
    pop
    ldc.i32 0x7f
    stloc 0
    ldc.i64 18446744073709551615
    stloc i
    ldc.f64 inf
    ldc.f64 -inf
    pop
    pop
    ldc.f64 nan
    ldc.f64 -0.0
    pop
    stloc acc
    ldc.f32 0.1
    stloc f
    ldc.f32 nan(0x7fc00001)
    stloc f
    ldc.f64 1e-7
    stloc acc
    ldc.bool true
    stloc b
    ldc.char 'x'
    stloc ch
    ldc.char 0xD800
    stloc ch
    ldc.char '\n'
    stloc ch
    ldstr "tab\there \"q\" \\ \u{e9} nul\0"
    stloc s
    ldstr "circle"
    stloc s
    ldnull
    stloc c
    ldc.f64 2.5
    newobj Circle::ctor
    stloc c
    ldloc c
    callvirt Shape::area
    conv.i64
    stloc i
    ldc.i32 3
    newarr i64
    stloc arr
    ldloc arr
    ldc.i32 0
    ldc.i64 7
    stelem i64
    ldloc arr
    ldlen
    pop
    ldloc c
    isinst Shape
    pop
    ldloc c
    castclass Circle
    pop
    ldsfld Circle::count
    pop
    ldc.i64 1
    atomic.add Circle::count
    pop
    call Host::clock_ns
    pop
  top:
    ldloc i
    ldc.i64 10
    bge done
    ldloc i
    ldc.i64 1
    add
    stloc i
    ldc.i32 1
    switch (top, done,
            mid)
  mid:
    br top
  done:
  outer:
    .try {
      .try {
        ldc.i32 1
        ldc.i32 0
        div
        pop
        leave after
      } catch ArithmeticException {
        pop
        leave after
      } catch Exception {
        pop
        leave after
      } finally {
        endfinally
      }
    } catch object {
      pop
      rethrow
    }
  after:
    .try {
      leave end
    } finally {
      .try {
        leave fin
      } catch Exception {
        throw
      }
    fin:
      endfinally
    }
  end:
    ldarg args
    ldlen
    ret
  }
}
"#;

fn asm(src: &str) -> Library {
    match assemble(src, "t.kasm") {
        Ok(l) => l,
        Err(es) => {
            let msgs: Vec<String> = es.iter().map(|e| e.to_string()).collect();
            panic!("assembly failed:\n{}", msgs.join("\n"));
        }
    }
}

fn errs(src: &str) -> Vec<AsmError> {
    match assemble(src, "t.kasm") {
        Ok(_) => panic!("expected an assembly error for:\n{src}"),
        Err(es) => es,
    }
}

/// The single error a program produces, as `line:col: message`.
fn one_err(src: &str) -> String {
    let es = errs(src);
    let msgs: Vec<String> = es
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.col, e.kind))
        .collect();
    assert_eq!(es.len(), 1, "expected one error, got:\n{}", msgs.join("\n"));
    msgs.into_iter().next().unwrap_or_default()
}

fn method<'a>(lib: &'a Library, class: &str, name: &str) -> &'a MethodDef {
    let t = lib
        .type_named(class)
        .unwrap_or_else(|| panic!("no class {class}"));
    t.methods
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no method {class}::{name}"))
}

fn insns(m: &MethodDef) -> Vec<Insn> {
    decode_all(&m.code)
        .expect("decodes")
        .into_iter()
        .map(|(_, i)| i)
        .collect()
}

/// Assemble, disassemble, assemble again: the `.klib` bytes must be identical
/// (and the libraries equal).
fn assert_roundtrip(src: &str) {
    let lib = asm(src);
    let text = disassemble(&lib);
    let again = match assemble(&text, "dis.kasm") {
        Ok(l) => l,
        Err(es) => {
            let msgs: Vec<String> = es.iter().map(|e| e.to_string()).collect();
            panic!(
                "disassembly does not assemble:\n{}\n---\n{text}",
                msgs.join("\n")
            );
        }
    };
    assert_eq!(lib, again, "round trip differs; disassembly:\n{text}");
    assert!(
        crate::format::write(&lib) == crate::format::write(&again),
        "bytes differ:\n{text}"
    );
    // And printing is stable.
    assert_eq!(text, disassemble(&again));
}

// ---- lexer ---------------------------------------------------------------

fn toks(src: &str) -> Vec<Tok> {
    let mut e = Vec::new();
    let t = lex(src, "t", &mut e);
    assert!(e.is_empty(), "{e:?}");
    t.into_iter().map(|t| t.tok).collect()
}

#[test]
fn lexes_numbers_words_and_punctuation() {
    let t = toks("ldc.i32 -5 0x1F conv.f32.un 1.5e-3 2E+4 -inf nan C::m -> {}[](),=: ; comment");
    assert_eq!(t[0], Tok::Ident("ldc.i32".into()));
    assert!(matches!(
        &t[1],
        Tok::Int {
            value: Some(-5),
            hex: false,
            ..
        }
    ));
    assert!(matches!(
        &t[2],
        Tok::Int {
            value: Some(31),
            hex: true,
            ..
        }
    ));
    assert_eq!(t[3], Tok::Ident("conv.f32.un".into()));
    assert_eq!(t[4], Tok::Float("1.5e-3".into()));
    assert_eq!(t[5], Tok::Float("2E+4".into()));
    assert_eq!(t[6], Tok::Float("-inf".into()));
    assert_eq!(t[7], Tok::Ident("nan".into()));
    assert_eq!(t[8], Tok::Ident("C".into()));
    assert_eq!(t[9], Tok::ColonColon);
    assert_eq!(t[11], Tok::Arrow);
    assert_eq!(t.last(), Some(&Tok::Eof));
    assert_eq!(t.len(), 22);
}

#[test]
fn lexes_strings_and_chars() {
    let t = toks(r#""a\n\t\r\0\\\"\'\u{1F600}" 'x' '\'' '\u{e9}'"#);
    assert_eq!(t[0], Tok::Str("a\n\t\r\0\\\"'\u{1F600}".into()));
    assert_eq!(t[1], Tok::Char('x' as u32));
    assert_eq!(t[2], Tok::Char('\'' as u32));
    assert_eq!(t[3], Tok::Char(0xe9));
}

#[test]
fn leading_byte_order_mark_is_skipped() {
    assert_eq!(
        toks("\u{feff}.library x")[0],
        Tok::Directive("library".into())
    );
}

#[test]
fn line_directive_renumbers() {
    let mut e = Vec::new();
    let t = lex("a\n.line 100\nb\nc\n.line 7 ; comment\nd", "t", &mut e);
    assert!(e.is_empty());
    let lines: Vec<(u32, u32)> = t.iter().map(|t| (t.line, t.phys)).collect();
    assert_eq!(&lines[..4], &[(1, 1), (100, 3), (101, 4), (7, 6)]);
}

#[test]
fn huge_integer_is_an_error_not_a_panic() {
    let e = one_err(".library x\n.class C { .method static f() { ldc.i64 99999999999999999999999999999999999999999999 ret } }");
    assert!(e.contains("out of range for ldc.i64"), "{e}");
}

// ---- parser ----------------------------------------------------------------

#[test]
fn assembles_the_full_program() {
    let lib = asm(FULL);
    assert_eq!(lib.name, "geometry");
    assert_eq!(
        lib.imports,
        vec![crate::library::Import {
            name: "other".to_string(),
            line: 3
        }]
    );
    let names: Vec<&str> = lib.types.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["Shape", "Named", "Circle", "Base", "Derived", "Host", "Program"]
    );

    let shape = lib.type_named("Shape").unwrap();
    assert_eq!(shape.kind, TypeKind::Interface);
    assert_eq!(shape.parent, None);
    assert!(shape.methods[0].flags.is_abstract);
    assert_eq!(shape.methods.len(), 1, "interfaces get no ctor");
    let named = lib.type_named("Named").unwrap();
    assert_eq!(
        named.interfaces,
        vec!["Shape".to_string(), "Runnable".to_string()]
    );
    assert_eq!(named.methods[0].ret, Some(TypeSig::class(STRING)));

    let c = lib.type_named("Circle").unwrap();
    assert!(c.is_sealed && !c.is_abstract);
    assert_eq!(c.parent.as_deref(), Some("Object"));
    assert_eq!(c.interfaces, vec!["Shape".to_string(), "Named".to_string()]);
    assert_eq!(c.line, 13);
    assert_eq!(c.attrs.len(), 1);
    let a = &c.attrs[0];
    assert_eq!(a.name, "Doc");
    assert_eq!(
        a.args[0],
        AttrArg {
            name: None,
            value: AttrValue::Str("a circle".into())
        }
    );
    assert_eq!(
        a.args[1],
        AttrArg {
            name: Some("version".into()),
            value: AttrValue::Int(2)
        }
    );
    assert_eq!(a.args[2].value, AttrValue::Float(-1500.0));
    assert_eq!(a.args[3].value, AttrValue::Bool(true));
    assert_eq!(a.args[4].value, AttrValue::Char(0x1F600));
    let f = |n: &str| c.fields.iter().find(|f| f.name == n).unwrap();
    assert_eq!(f("r").attrs[0].name, "Doc");
    assert_eq!(
        (f("r").access, f("r").mutability),
        (Access::Public, Mutability::Immutable)
    );
    assert_eq!(
        (f("hits").access, f("hits").mutability),
        (Access::Private, Mutability::Mutable)
    );
    assert_eq!(f("area_cache").mutability, Mutability::MutableSelf);
    assert_eq!(
        f("secret").mutability,
        Mutability::Mutable,
        "private mutable(self) is private mutable"
    );
    assert!(f("count").is_static);
    assert_eq!(f("count").ty, TypeSig::Atomic(Prim::I64));
    assert_eq!(f("grid").access, Access::Protected);
    assert_eq!(
        f("grid").ty,
        TypeSig::Array(Box::new(TypeSig::Array(Box::new(TypeSig::Prim(Prim::I64)))))
    );
    assert_eq!(
        f("names").ty,
        TypeSig::Array(Box::new(TypeSig::class(STRING)))
    );
    assert_eq!(f("any").ty, TypeSig::class(OBJECT));
    assert_eq!(f("r").line, 15);
    assert_eq!(c.properties[0].getter.as_deref(), Some("get_r"));
    assert_eq!(c.properties[0].setter, None);
    assert_eq!(c.properties[1].setter.as_deref(), Some("set_p"));
    assert_eq!(c.properties[1].access, Access::Protected);
    assert!(!c
        .methods
        .iter()
        .any(|m| m.name == "ctor" && m.params.is_empty()));

    let ctor = method(&lib, "Circle", "ctor");
    assert_eq!(ctor.line, 26);
    assert_eq!(
        insns(ctor),
        vec![
            Insn {
                op: Op::Ldarg,
                operand: Operand::Var(0)
            },
            Insn {
                op: Op::Ldarg,
                operand: Operand::Var(1)
            },
            Insn {
                op: Op::Stfld,
                operand: Operand::Field(0)
            },
            Insn {
                op: Op::Ret,
                operand: Operand::None
            },
        ]
    );
    assert_eq!(ctor.lines.len(), 4);
    assert_eq!(
        ctor.lines[0],
        LineEntry {
            offset: 0,
            line: 27
        }
    );
    // Two instructions on one line share one entry.
    let name = method(&lib, "Circle", "name");
    assert_eq!(
        name.lines,
        vec![LineEntry {
            offset: 0,
            line: name.line
        }]
    );
    assert_eq!(
        lib.member_refs[0],
        MemberRef {
            class: "Circle".into(),
            name: "r".into(),
            kind: MemberKind::Field
        }
    );

    let area = method(&lib, "Circle", "area");
    assert!(area.flags.is_virtual && !area.flags.is_static);
    let cctor = method(&lib, "Circle", "cctor");
    assert!(cctor.flags.is_static);
    let f_ = method(&lib, "Base", "f");
    assert!(f_.flags.is_abstract && !f_.has_body());
    assert!(method(&lib, "Derived", "f").flags.is_override);
    let native = method(&lib, "Host", "clock_ns");
    assert!(native.flags.is_native && native.flags.is_static && native.code.is_empty());

    // Implicit constructors.
    for cls in ["Base", "Derived", "Host", "Program"] {
        let t = lib.type_named(cls).unwrap();
        let m = t.methods.last().unwrap();
        assert_eq!(m.name, "ctor", "{cls}");
        assert_eq!(m.access, Access::Public);
        assert_eq!(
            insns(m),
            vec![Insn {
                op: Op::Ret,
                operand: Operand::None
            }]
        );
        assert_eq!(m.line, t.line);
    }
}

#[test]
fn operands_and_tables() {
    let lib = asm(FULL);
    let main = method(&lib, "Program", "main");
    let is = insns(main);
    assert_eq!(is[0].operand, Operand::I32(i32::MIN));
    assert_eq!(
        is[2].operand,
        Operand::I32(-1),
        "4294967295 is a bit pattern"
    );
    assert_eq!(
        is[4],
        Insn {
            op: Op::LdcI32,
            operand: Operand::I32(0x7f)
        }
    );
    assert_eq!(is[6].operand, Operand::I64(-1));
    assert_eq!(is[8].operand, Operand::F64(f64::INFINITY));
    assert_eq!(is[9].operand, Operand::F64(f64::NEG_INFINITY));
    match is[12].operand {
        Operand::F64(v) => assert_eq!(v.to_bits(), f64::NAN.to_bits()),
        ref o => panic!("{o:?}"),
    }
    match is[13].operand {
        Operand::F64(v) => assert_eq!(v.to_bits(), (-0.0f64).to_bits()),
        ref o => panic!("{o:?}"),
    }
    assert_eq!(is[16].operand, Operand::F32(0.1));
    match is[18].operand {
        Operand::F32(v) => assert_eq!(v.to_bits(), 0x7fc00001),
        ref o => panic!("{o:?}"),
    }
    assert!(is.contains(&Insn {
        op: Op::LdcChar,
        operand: Operand::Char(0xD800)
    }));
    assert!(is.contains(&Insn {
        op: Op::LdcChar,
        operand: Operand::Char('\n' as u32)
    }));
    assert!(is.contains(&Insn {
        op: Op::Stloc,
        operand: Operand::Var(0)
    }));
    assert!(
        is.contains(&Insn {
            op: Op::Ldarg,
            operand: Operand::Var(0)
        }),
        "static: args start at 0"
    );
    // Strings: deduplicated, first-use order ("circle" first used in Circle::name).
    assert_eq!(lib.strings[0], "circle");
    assert_eq!(lib.strings[1], "tab\there \"q\" \\ \u{e9} nul\0");
    assert_eq!(lib.strings.len(), 2);
    // Types in first-use order, including catch clauses.
    let tys: Vec<String> = lib.type_refs.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        tys,
        [
            "i64",
            "Shape",
            "Circle",
            "ArithmeticException",
            "Exception",
            "object"
        ]
    );
    // Members deduplicated with their kind.
    let ms: Vec<String> = lib
        .member_refs
        .iter()
        .map(|m| format!("{}::{}:{:?}", m.class, m.name, m.kind))
        .collect();
    assert_eq!(
        ms,
        [
            "Circle::r:Field",
            "Circle::count:Field",
            "Circle::ctor:Method",
            "Shape::area:Method",
            "Host::clock_ns:Method"
        ]
    );
}

#[test]
fn labels_and_switch_resolve_to_offsets() {
    let lib = asm(".library x\n.class C {\n.method static f() {\nL0:\n  nop\n  switch (L0, L1)\nL1: br L0\n L2:\n}\n}");
    let m = method(&lib, "C", "f");
    let d = decode_all(&m.code).unwrap();
    assert_eq!(d[1].1.operand, Operand::Switch(vec![0, 14]));
    assert_eq!(
        d[2],
        (
            14,
            Insn {
                op: Op::Br,
                operand: Operand::Target(0)
            }
        )
    );
    assert_eq!(m.code.len(), 19);
}

#[test]
fn handlers_innermost_first_with_cil_ranges() {
    let src = ".library x\n.class C {\n.method static f() {\n\
        .try {\n nop\n leave e\n } catch A {\n pop\n leave e\n } catch B {\n pop\n leave e\n } finally {\n endfinally\n }\n\
        e:\n ret\n}\n}";
    let lib = asm(src);
    let m = method(&lib, "C", "f");
    // nop@0 leave@1 | pop@6 leave@7 | pop@12 leave@13 | endfinally@18 | ret@19
    assert_eq!(
        m.handlers,
        vec![
            Handler {
                try_start: 0,
                try_end: 6,
                handler_start: 6,
                handler_end: 12,
                kind: HandlerKind::Catch(0)
            },
            Handler {
                try_start: 0,
                try_end: 6,
                handler_start: 12,
                handler_end: 18,
                kind: HandlerKind::Catch(1)
            },
            Handler {
                try_start: 0,
                try_end: 18,
                handler_start: 18,
                handler_end: 19,
                kind: HandlerKind::Finally
            },
        ]
    );
    let nested = ".library x\n.class C {\n.method static f() {\n\
        .try {\n .try {\n nop\n leave e\n } finally {\n endfinally\n }\n leave e\n } catch A {\n .try {\n leave e\n } catch B {\n rethrow\n }\n }\n\
        e:\n ret\n}\n}";
    let lib = asm(nested);
    let m = method(&lib, "C", "f");
    // nop@0 leave@1 endfinally@6 leave@7 | leave@12 rethrow@17 | ret@18
    assert_eq!(
        m.handlers,
        vec![
            Handler {
                try_start: 0,
                try_end: 6,
                handler_start: 6,
                handler_end: 7,
                kind: HandlerKind::Finally
            },
            Handler {
                try_start: 12,
                try_end: 17,
                handler_start: 17,
                handler_end: 18,
                kind: HandlerKind::Catch(1)
            },
            Handler {
                try_start: 0,
                try_end: 12,
                handler_start: 12,
                handler_end: 18,
                kind: HandlerKind::Catch(0)
            },
        ]
    );
    assert_roundtrip(nested);
}

#[test]
fn label_before_try_names_first_instruction() {
    let lib = asm(".library x\n.class C {\n.method static f() {\n nop\n l:\n .try {\n leave l\n } finally {\n endfinally\n }\n}\n}");
    let m = method(&lib, "C", "f");
    assert_eq!(insns(m)[1].operand, Operand::Target(1));
    assert_eq!(m.handlers[0].try_start, 1);
}

#[test]
fn object_and_modifier_names() {
    let lib = asm(".library std\n.class public Object {\n}\n.class X {\n .field static mutable native: i64\n .method static(a: i64) -> i64 { ldarg a ret }\n}");
    assert_eq!(lib.types[0].parent, None);
    assert_eq!(lib.types[0].methods[0].name, "ctor");
    assert_eq!(lib.types[1].parent.as_deref(), Some("Object"));
    assert_eq!(lib.types[1].fields[0].name, "native");
    assert!(lib.types[1].fields[0].is_static);
    assert_eq!(lib.types[1].methods[0].name, "static");
    assert!(!lib.types[1].methods[0].flags.is_static);
    assert_eq!(insns(&lib.types[1].methods[0])[0].operand, Operand::Var(1));
}

#[test]
fn std_library_assembles_and_round_trips() {
    let src = include_str!("../runtime/std.kasm");
    let lib = asm(src);
    assert_eq!(lib.name, "std");
    assert_eq!(lib.type_named("Object").unwrap().parent, None);
    assert_eq!(
        lib.type_named("String").unwrap().parent.as_deref(),
        Some("Object")
    );
    assert_eq!(lib.type_named("Runnable").unwrap().access, Access::Public);
    assert_roundtrip(src);
}

// ---- round trip ------------------------------------------------------------

#[test]
fn full_program_round_trips() {
    assert_roundtrip(FULL);
}

#[test]
fn round_trip_keeps_odd_line_layouts() {
    assert_roundtrip(
        ".library x\n\n\n.class C { .field public a: i64 .method public static f() -> i64 { ldc.i64 1 ldc.i64 2\n add\n\n\n ret } .field public b: i64 }\n.line 500\n.class D {\n .method public g() {\n .line 20\n ret\n }\n}\n",
    );
}

#[test]
fn round_trip_of_every_opcode() {
    let mut body = String::new();
    for &op in Op::ALL {
        let operand = match op.operand_kind() {
            crate::bytecode::OperandKind::None => "",
            crate::bytecode::OperandKind::I32 => "-7",
            crate::bytecode::OperandKind::I64 => "-9",
            crate::bytecode::OperandKind::F32 => "1.25e-40",
            crate::bytecode::OperandKind::F64 => "-2.2250738585072014e-308",
            crate::bytecode::OperandKind::Bool => "false",
            crate::bytecode::OperandKind::Char => "'\\u{7f}'",
            crate::bytecode::OperandKind::Str => "\"s\\r\"",
            crate::bytecode::OperandKind::Var => "1",
            crate::bytecode::OperandKind::Target => "l",
            crate::bytecode::OperandKind::Switch => "(l, l)",
            crate::bytecode::OperandKind::Method => "C::m",
            crate::bytecode::OperandKind::Field => "C::f",
            crate::bytecode::OperandKind::Type => "C[]",
        };
        body.push_str(&format!("    {} {operand}\n", op.mnemonic()));
    }
    let src = format!(".library x\n.class C {{\n  .method public m(a: i64) {{\n    .locals (x: i64, y: i64)\n  l:\n{body}  }}\n}}\n");
    let lib = asm(&src);
    let ops: Vec<Op> = insns(method(&lib, "C", "m"))
        .into_iter()
        .map(|i| i.op)
        .collect();
    assert_eq!(ops, Op::ALL);
    assert_roundtrip(&src);
}

#[test]
fn floats_print_bit_exactly() {
    for v in [
        0.1,
        -0.0,
        1e300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        123456789.0,
        1.0 / 3.0,
    ] {
        let s = disasm::fmt_f64(v);
        assert_eq!(s.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{s}");
    }
    for v in [0.1f32, 16777217.0, f32::MIN_POSITIVE, 1e-45, f32::MAX] {
        let s = disasm::fmt_f32(v);
        assert_eq!(s.parse::<f32>().unwrap().to_bits(), v.to_bits(), "{s}");
    }
    let src = ".library x\n.class C {\n .method static f() {\n ldc.f64 nan(0xfff0000000000001)\n ldc.f64 -nan\n ldc.f32 -nan\n ldc.f32 nan(0xff800001)\n ldc.f32 3.4028235e38\n ret\n }\n}";
    let lib = asm(src);
    let text = disassemble(&lib);
    assert!(
        text.contains("nan(0xfff0000000000001)") && text.contains("-nan"),
        "{text}"
    );
    let again = asm(&text);
    assert_eq!(method(&lib, "C", "f").code, method(&again, "C", "f").code);
}

#[test]
fn disassembly_shows_names_and_labels() {
    let lib = asm(FULL);
    let text = disassemble(&lib);
    assert!(text.contains("ldarg this"));
    assert!(text.contains("stloc acc"));
    assert!(text.contains("ldarg args"));
    assert!(text.contains("\n    L_"), "{text}");
    assert!(text.contains("} catch ArithmeticException {"));
    assert!(text.contains(".field public static mutable count: atomic i64"));
    assert!(
        text.contains(".method public ctor() {"),
        "implicit ctor is shown"
    );
}

#[test]
fn disassembler_survives_malformed_libraries() {
    let mut lib = asm(FULL);
    for t in &mut lib.types {
        for m in &mut t.methods {
            m.code.push(0xff);
            m.handlers.push(Handler {
                try_start: 3,
                try_end: 1,
                handler_start: 900,
                handler_end: 2,
                kind: HandlerKind::Catch(77),
            });
            m.handlers.insert(
                0,
                Handler {
                    try_start: 0,
                    try_end: 1000,
                    handler_start: 1,
                    handler_end: 0,
                    kind: HandlerKind::Finally,
                },
            );
            m.lines.push(LineEntry {
                offset: 99999,
                line: 3,
            });
            m.params.push(Var {
                name: "bad name".into(),
                ty: TypeSig::Prim(Prim::I32),
            });
        }
        t.parent = None;
    }
    lib.strings.clear();
    lib.member_refs.clear();
    lib.type_refs.clear();
    let text = disassemble(&lib);
    assert!(text.contains("; error:"));
}

// ---- errors -----------------------------------------------------------------

#[test]
fn error_messages_and_positions() {
    let hdr = ".library x\n.class C {\n.method static f() {\n";
    let cases: &[(&str, &str)] = &[
        ("  frob 1\n", "4:3: unknown instruction `frob`"),
        ("  br nowhere\n", "4:6: undefined label `nowhere`"),
        (
            "a:\na:\n ret\n",
            "5:1: duplicate label `a` (first declared on line 4)",
        ),
        (
            "  ldc.i32 4294967296\n",
            "4:11: integer literal 4294967296 out of range for ldc.i32 (-2147483648..=4294967295)",
        ),
        (
            "  ldc.i32 -2147483649\n",
            "4:11: integer literal -2147483649 out of range",
        ),
        (
            "  ldc.i64 18446744073709551616\n",
            "4:11: integer literal 18446744073709551616 out of range for ldc.i64",
        ),
        (
            "  ldc.char 1114112\n",
            "4:12: integer literal 1114112 out of range for ldc.char",
        ),
        ("  ldstr \"a\\qb\"\n", "4:11: invalid escape sequence `\\q`"),
        ("  ldstr \"abc\n", "4:9: unterminated string literal"),
        (
            "  ldc.char 'ab'\n",
            "4:12: invalid character literal: it holds more than one character",
        ),
        (
            "  ldc.char '\\u{d800}'\n",
            "4:13: invalid escape sequence `\\u{d800}`",
        ),
        ("  ldc.i32 12ab\n", "4:11: invalid number literal `12ab`"),
        (
            "  ldarg nope\n",
            "4:9: method `f` has no argument named `nope`",
        ),
        ("  ldarg this\n", "4:9: `this` used in static method `f`"),
        (
            "  ldarg 0\n",
            "4:9: argument index 0 out of range (the method has 0 arguments)",
        ),
        ("  ldloc x\n", "4:9: method `f` has no local named `x`"),
        (" .locals (a: i64, a: i64)\n", "4:19: duplicate local `a`"),
        (
            "  ldc.bool 1\n",
            "4:12: expected `true` or `false`, found integer `1`",
        ),
        (
            "  call C\n",
            "4:9: expected `::` (operands are written `Class::member`), found end of line",
        ),
        (
            "  .try {\n nop\n }\n",
            "4:3: `.try` block needs at least one `catch` or `finally` clause",
        ),
        (
            "  .try {\n } finally {\n }\n",
            "4:3: `.try` construct contains no instructions",
        ),
        (
            "  .try {\n nop\n } finally {\n nop\n } catch X {\n nop\n }\n",
            "8:4: `finally` must be the last clause of a `.try`",
        ),
        (
            "  catch X {\n  }\n",
            "4:3: unexpected `catch` without a preceding `.try { ... }` block",
        ),
        (
            "  newarr atomic i32\n",
            "4:17: `atomic` applies only to bool, u8, i64 and u64, not to `i32`",
        ),
        (
            "  ldc.f64 0x10\n",
            "4:11: expected a float literal, found integer `0x10`",
        ),
        (
            "  ldc.f64 nan(0x7ff0000000000000)\n",
            "4:15: invalid float literal nan(0x7ff0000000000000)",
        ),
        ("  .bogus\n", "4:3: unknown directive `.bogus`"),
        ("  ldc.i32 1 @\n", "4:13: unexpected character '@'"),
    ];
    for (body, want) in cases {
        let src = format!("{hdr}{body} ret\n}}\n}}\n");
        let got = one_err(&src);
        assert!(
            got.starts_with(want),
            "for {body:?}:\n got: {got}\nwant: {want}"
        );
    }
}

#[test]
fn structural_errors() {
    let cases: &[(&str, &str)] = &[
        ("", "1:1: missing `.library` directive"),
        (".class C {}\n", "1:1: missing `.library` directive"),
        (".import a\n.library x\n", "2:1: `.library` must be the first directive"),
        (".library x\n.library y\n", "2:1: duplicate `.library` directive"),
        (".library x\n.import a\n.import a\n", "3:9: duplicate import `a` (first declared on line 2)"),
        (".library x\n.class C {}\n.class C {}\n", "3:8: duplicate class `C` (first declared on line 2)"),
        (".library x\n.class C {\n .field a: i64\n .field a: i64\n}\n", "4:9: duplicate field `a`"),
        (".library x\n.class C {\n .method f() { ret }\n .method f() { ret }\n}\n", "4:10: duplicate method `f`"),
        (".library x\n.class C {\n .method f(a: i64, a: i64) { ret }\n}\n", "3:20: duplicate parameter `a`"),
        (".library x\n.class C {\n .method f(this: C) { ret }\n}\n", "3:12: `this` cannot be declared as a parameter"),
        (".library x\n.class C {\n .method f()\n}\n", "3:10: method `f` has no body"),
        (".library x\n.class C {\n .method abstract f() { ret }\n}\n", "3:23: abstract method `f` cannot have a body"),
        (".library x\n.interface I {\n .method f() { ret }\n}\n", "3:14: interface method `f` cannot have a body"),
        (".library x\n.class C {\n .method f() {\n ret\n}\n.class D {}\n", "2:10: unterminated class body"),
        (".library x\n.class C {\n .field public private a: i64\n}\n", "3:16: conflicting modifiers `public` and `private`"),
        (".library x\n.class C {\n .field static static a: i64\n}\n", "3:16: duplicate modifier `static`"),
        (".library x\n.class C {\n .field virtual a: i64\n}\n", "3:9: modifier `virtual` is not allowed on a field"),
        (".library x\n.class sealed mutable(self) C {}\n", "2:15: modifier `mutable(self)` is not allowed on a class"),
        (".library x\n.class C {\n .field a: i64[\n}\n", "3:16: expected `]`, found end of line"),
        (".library x\n.attr A(1)\n", "2:1: `.attr` must be followed by a class"),
        (".library x\nfoo\n", "2:1: unexpected `foo` at top level"),
        (".library x\n.field a: i64\n", "2:1: unexpected directive `.field` outside a class"),
        (".library x\n.line x\n", "2:1: malformed `.line` directive"),
        (".library x\n.class C {\n .field a: atomic f64\n}\n", "3:19: `atomic` applies only to bool, u8, i64 and u64, not to `f64`"),
        (".library x\n.class C {\n .field a: i64[][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][]\n}\n", "3:79: array type nested more than 32 levels deep"),
    ];
    for (src, want) in cases {
        let got = one_err(src);
        assert!(
            got.starts_with(want),
            "for {src:?}:\n got: {got}\nwant: {want}"
        );
    }
}

#[test]
fn unclosed_bodies_at_end_of_file() {
    let es = errs(".library x\n.class C {\n .method f() {\n ret\n");
    let msgs: Vec<String> = es.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "t.kasm:2:10: unterminated class body: this `{` is never closed",
            "t.kasm:3:14: unterminated method body: this `{` is never closed"
        ]
    );
}

#[test]
fn reports_all_errors_and_keeps_going() {
    let src = ".library x\n.class C {\n .method static f() {\n  frob\n  ldc.i32 x\n  br nowhere\n  ret\n }\n .field a: \n .method g() { ldloc q ret }\n}\n.class D : {}\n.class E { .method h() { ret } }\n";
    let es = errs(src);
    let lines: Vec<u32> = es.iter().map(|e| e.line).collect();
    assert_eq!(lines, [4, 5, 6, 9, 10, 12], "{es:#?}");
    assert!(es[0]
        .to_string()
        .starts_with("t.kasm:4:3: unknown instruction `frob`"));
}

/// A small deterministic generator for the noise test.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn never_panics_on_truncation_or_noise() {
    let src = FULL;
    // Every truncation (on char boundaries).
    for (i, _) in src.char_indices() {
        let _ = assemble(&src[..i], "t.kasm");
    }
    // Random byte noise of a real program.
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let noise = b"{}()[]:;,.=-\"'\\ \n\tx0_9e+ldc.i32 .try catch finally .method .class";
    for _ in 0..400 {
        let mut bytes = src.as_bytes().to_vec();
        let edits = 1 + rng.next() % 8;
        for _ in 0..edits {
            let at = (rng.next() % bytes.len() as u64) as usize;
            match rng.next() % 4 {
                0 => bytes[at] = noise[(rng.next() % noise.len() as u64) as usize],
                1 => bytes[at] = rng.next() as u8,
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, noise[(rng.next() % noise.len() as u64) as usize]),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(lib) = assemble(&text, "t.kasm") {
            // Whatever assembles must also round trip.
            let again = assemble(&disassemble(&lib), "d.kasm").expect("disassembly assembles");
            assert_eq!(disassemble(&again), disassemble(&lib));
            assert!(crate::format::write(&lib) == crate::format::write(&again));
        }
    }
    // Pure garbage.
    for n in [1usize, 7, 100, 3000] {
        let g: String = (0..n)
            .map(|_| char::from_u32((rng.next() % 0x250) as u32).unwrap_or('?'))
            .collect();
        let _ = assemble(&g, "g.kasm");
    }
}

/// Every jit-test program that assembles round trips to identical bytes; the
/// ones that do not assemble are the assembly-error cases.
#[test]
fn every_jit_test_round_trips() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "kasm") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("jit-tests"), &mut files);
    files.push(root.join("src/runtime/std.kasm"));
    files.sort();
    let mut checked = 0;
    for f in &files {
        let src = std::fs::read_to_string(f).expect("readable");
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        match assemble(&src, &name) {
            Ok(lib) => {
                let text = disassemble(&lib);
                let again = assemble(&text, &name).unwrap_or_else(|e| {
                    panic!(
                        "{}: disassembly does not assemble: {e:?}\n{text}",
                        f.display()
                    )
                });
                assert!(
                    crate::format::write(&lib) == crate::format::write(&again),
                    "{}: round trip changes the bytes\n{text}",
                    f.display()
                );
                checked += 1;
            }
            Err(_) if f.components().any(|c| c.as_os_str() == "lib") => {
                // Libraries under `lib/` are imported by cases; a broken one
                // is there on purpose, and the importing case checks the error.
            }
            Err(es) => {
                // Only files that expect an assembly error may fail, and the
                // first error must be one the file names.
                let first = es[0].to_string();
                assert!(src.contains(";! exit: 3"), "{}: {first}", f.display());
                let wanted: Vec<&str> = src
                    .lines()
                    .filter_map(|l| l.split(";! stderr: ").nth(1))
                    .collect();
                assert!(
                    wanted
                        .iter()
                        .all(|w| es.iter().any(|e| e.to_string().contains(w))),
                    "{}: errors {es:?} do not contain {wanted:?}",
                    f.display()
                );
            }
        }
    }
    assert!(checked > 0);
}
