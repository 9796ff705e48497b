//! Verifier unit tests. Programs are written in kasm (assembled with std),
//! hostile shapes the assembler cannot produce are made by editing the
//! assembled `Library`, and every `jit-tests/verify` case is checked here too
//! (its `;! stderr:` directives against the verifier's messages).

use super::*;
use crate::asm::assemble;
use crate::bytecode::{encode, Operand};
use crate::library::{Handler, HandlerKind, Library, MemberKind, MemberRef, MethodDef};

const MAIN: &str = ".class public Program {\n  .method public static main() {\n    ret\n  }\n}\n";

fn std_lib() -> Library {
    assemble(include_str!("../runtime/std.kasm"), "std.kasm").expect("std assembles")
}

fn lib(src: &str) -> Library {
    assemble(src, "t.kasm").unwrap_or_else(|e| panic!("test program does not assemble: {e:?}"))
}

fn run_libs(libs: Vec<Library>) -> Result<Verified, Vec<VerifyError>> {
    let files: Vec<String> = libs
        .iter()
        .map(|l| {
            if l.name == "std" {
                "std.kasm".to_string()
            } else {
                format!("{}.kasm", l.name)
            }
        })
        .collect();
    let p = Program::new(libs).expect("no duplicate classes");
    verify_program(&p, &files)
}

fn run(lib: Library) -> Result<Verified, Vec<VerifyError>> {
    run_libs(vec![std_lib(), lib])
}

fn errors(lib: Library) -> Vec<String> {
    match run(lib) {
        Ok(_) => panic!("program was accepted"),
        Err(es) => es.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_error(es: &[String], needle: &str) {
    assert!(
        es.iter().any(|e| e.contains(needle)),
        "no error contains {needle:?}:\n{}",
        es.join("\n")
    );
}

fn method_mut<'a>(l: &'a mut Library, class: &str, m: &str) -> &'a mut MethodDef {
    let t = l.types.iter_mut().find(|t| t.name == class).expect("class");
    t.methods.iter_mut().find(|x| x.name == m).expect("method")
}

fn code(ops: &[(Op, Operand)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, operand) in ops {
        encode(&mut out, *op, operand);
    }
    out
}

/// The verifier's view of `Program::main` in an accepted program.
fn main_info(src: &str) -> MethodInfo {
    let l = lib(src);
    let v = run(l).unwrap_or_else(|e| panic!("rejected: {e:?}"));
    let p = Program::new(vec![std_lib(), lib(src)]).unwrap();
    let id = p.class("Program").unwrap();
    let mid = p.find_method(id, "main").unwrap();
    v.methods.get(&mid).expect("main verified").clone()
}

fn cls(n: &str) -> VType {
    VType::Ref(TypeSig::class(n))
}

#[test]
fn jit_test_cases_report_their_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jit-tests/verify");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("jit-tests/verify")
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.path());
    let mut checked = 0;
    for e in entries {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "kasm") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let src = std::fs::read_to_string(&path).unwrap();
        let want: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix(";! stderr: "))
            .collect();
        let fails = src.lines().any(|l| l.trim() == ";! exit: 3");
        let l = assemble(&src, &name).unwrap_or_else(|e| panic!("{name} does not assemble: {e:?}"));
        // Imports come from jit-tests/verify/lib (one level is enough here).
        let mut libs = vec![std_lib()];
        let mut files = vec!["std.kasm".to_string()];
        for imp in &l.imports {
            let f = format!("{}.kasm", imp.name);
            let text = std::fs::read_to_string(dir.join("lib").join(&f)).expect("imported library");
            libs.push(assemble(&text, &f).expect("imported library assembles"));
            files.push(f);
        }
        libs.push(l);
        files.push(name.clone());
        let p = Program::new(libs).unwrap();
        match verify_program(&p, &files) {
            Ok(_) => assert!(!fails, "{name}: accepted, but it should fail verification"),
            Err(es) => {
                let text: Vec<String> = es.iter().map(|e| e.to_string()).collect();
                assert!(fails, "{name}: rejected:\n{}", text.join("\n"));
                for w in &want {
                    assert!(
                        text.iter().any(|t| t.contains(w)),
                        "{name}: no error contains {w:?}:\n{}",
                        text.join("\n")
                    );
                }
            }
        }
        checked += 1;
    }
    assert!(checked > 50, "only {checked} cases found");
}

#[test]
fn std_verifies_and_every_body_is_typed() {
    let v = run(lib(&format!(".library t\n{MAIN}"))).expect("accepted");
    let p = Program::new(vec![std_lib(), lib(&format!(".library t\n{MAIN}"))]).unwrap();
    let exc = p.class("Exception").unwrap();
    let ctor = p.find_method(exc, "ctor").unwrap();
    let info = &v.methods[&ctor];
    assert_eq!(info.max_stack, 2);
    // natives have no body and no entry
    let std_cls = p.class("Std").unwrap();
    assert!(!v
        .methods
        .contains_key(&p.find_method(std_cls, "println").unwrap()));
    // every method with a body has one
    for id in p.all_classes() {
        for (i, m) in p.def(id).methods.iter().enumerate() {
            let has = v.methods.contains_key(&MemberId {
                class: id,
                index: i as u32,
            });
            assert_eq!(
                has,
                m.has_body() && p.def(id).kind == TypeKind::Class,
                "{}::{}",
                p.def(id).name,
                m.name
            );
        }
    }
}

#[test]
fn stacks_before_every_instruction() {
    let info = main_info(
        ".library t
.class public Program {
  .method public static main() -> i32 {
    .locals (s: string)
    ldc.i32 2
    ldc.i32 3
    add
    ldstr \"x\"
    stloc s
    conv.i64
    conv.i32
    ret
    nop
  }
}",
    );
    let stacks: Vec<Option<Vec<VType>>> = (0..info.insns.len())
        .map(|i| info.stack(i).map(|s| s.to_vec()))
        .collect();
    use VType::*;
    assert_eq!(
        stacks,
        vec![
            Some(vec![]),
            Some(vec![I32]),
            Some(vec![I32, I32]),
            Some(vec![I32]),
            Some(vec![I32, cls("String")]),
            Some(vec![I32]),
            Some(vec![I64]),
            Some(vec![I32]),
            None, // unreachable nop
        ]
    );
    assert_eq!(info.max_stack, 2);
    assert_eq!(info.index_of(0), Some(0));
    assert_eq!(info.index_of(5), Some(1));
    assert_eq!(info.index_of(6), None);
    assert_eq!(info.insns[0].line, 5);
    assert_eq!(info.insns[2].line, 7);
}

#[test]
fn references_merge_to_class_interface_or_object() {
    let src = ".library t
.interface Shape {
  .method area() -> f64
}
.interface Other {
  .method f()
}
.class public Base {
}
.class public A : Base implements Shape {
  .method public area() -> f64 {
    ldc.f64 1
    ret
  }
}
.class public B : Base implements Shape {
  .method public area() -> f64 {
    ldc.f64 2
    ret
  }
}
.class public C implements Shape, Other {
  .method public area() -> f64 {
    ldc.f64 3
    ret
  }
  .method public f() {
    ret
  }
}
.class public D implements Shape, Other {
  .method public area() -> f64 {
    ldc.f64 3
    ret
  }
  .method public f() {
    ret
  }
}
"
    .to_string()
        + MAIN;
    let p = Program::new(vec![std_lib(), lib(&src)]).unwrap();
    let j = |a: &str, b: &str| body::join_refs(&p, &TypeSig::class(a), &TypeSig::class(b));
    assert_eq!(j("A", "B"), TypeSig::class("Base"));
    assert_eq!(j("A", "C"), TypeSig::class("Shape"));
    assert_eq!(j("A", "Base"), TypeSig::class("Base"));
    assert_eq!(j("C", "Shape"), TypeSig::class("Shape"));
    // two common interfaces, neither more specific: object
    assert_eq!(j("C", "D"), TypeSig::class("Object"));
    assert_eq!(j("A", "String"), TypeSig::class("Object"));
    let arr = |t: &str| TypeSig::Array(Box::new(TypeSig::class(t)));
    assert_eq!(
        body::join_refs(&p, &arr("A"), &arr("B")),
        TypeSig::class("Object")
    );
    assert_eq!(body::join_refs(&p, &arr("A"), &arr("A")), arr("A"));

    // the join the verifier uses keeps every most specific common type
    let c = TypeSig::class;
    let s = |a: &[&str], b: &[&str]| {
        let v = |x: &[&str]| x.iter().map(|n| c(n)).collect::<Vec<_>>();
        body::join_ref_sets(&p, &v(a), &v(b))
    };
    let both = |a: &str, b: &str| VType::Join(vec![c(a), c(b)].into_boxed_slice());
    assert_eq!(s(&["A"], &["B"]), both("Base", "Shape"));
    assert_eq!(s(&["C"], &["D"]), both("Other", "Shape"));
    assert_eq!(s(&["A"], &["C"]), VType::Ref(c("Shape")));
    assert_eq!(s(&["A"], &["Base"]), VType::Ref(c("Base")));
    assert_eq!(s(&["A"], &["String"]), VType::Ref(c("Object")));
    // joining again moves up or stays: a fixed point is reached
    assert_eq!(s(&["Base", "Shape"], &["A"]), both("Base", "Shape"));
    assert_eq!(s(&["Base", "Shape"], &["C"]), VType::Ref(c("Shape")));
    assert_eq!(
        s(&["Other", "Shape"], &["Base", "Shape"]),
        VType::Ref(c("Shape"))
    );
    assert_eq!(
        body::join_ref_sets(&p, &[arr("A")], &[c("A")]),
        VType::Ref(c("Object"))
    );
}

#[test]
fn loop_state_widens_and_settles() {
    let info = main_info(
        ".library t
.class public Program {
  .method public static main() {
    .locals (i: i32)
    ldstr \"x\"
  top:
    ldloc i
    brtrue done
    pop
    ldc.i32 1
    newarr i32
    ldc.i32 1
    stloc i
    br top
  done:
    pop
    ret
  }
}",
    );
    // `top` is the second instruction: first reached with a string, then an i32[].
    assert_eq!(info.stack(1).map(|s| s.to_vec()), Some(vec![cls("Object")]));
    let last = info.insns.len() - 1;
    assert_eq!(info.stack(last).map(|s| s.to_vec()), Some(vec![]));
}

#[test]
fn handler_entry_stacks() {
    let info = main_info(
        ".library t
.class public Program {
  .method public static main() {
    .try {
      .try {
        ldc.i32 1
        ldc.i32 0
        div
        pop
        leave after
      } catch ArithmeticException {
        ldfld Exception::message
        call Std::println
        leave after
      }
    } finally {
      endfinally
    }
  after:
    ret
  }
}",
    );
    let at = |op: Op, nth: usize| {
        let i = (0..info.insns.len())
            .filter(|&i| info.insns[i].insn.op == op)
            .nth(nth)
            .unwrap();
        info.stack(i).map(|s| s.to_vec())
    };
    assert_eq!(at(Op::Ldfld, 0), Some(vec![cls("ArithmeticException")]));
    assert_eq!(at(Op::Endfinally, 0), Some(vec![]));
    assert_eq!(at(Op::Ret, 0), Some(vec![]));
}

#[test]
fn every_error_is_reported_with_its_location() {
    let es = errors(lib(".library t
.class public A {
  .method public static f() {
    ldc.i32 1
    ldc.f64 2
    add
    pop
    ldstr \"s\"
    neg
    pop
    ret
  }
}
.class public B : Nope {
}
.class public Program {
  .method public static main() -> i32 {
    ret
  }
}"));
    assert_eq!(es.len(), 4, "{es:#?}");
    assert_error(
        &es,
        "t.kasm:6: A::f @14: `add` expects two values of the same numeric type, found [i32, f64]",
    );
    assert_error(
        &es,
        "t.kasm:9: A::f @21: `neg` expects a number, found [string]",
    );
    assert_error(&es, "t.kasm:14: B: base class `Nope` does not exist");
    assert_error(
        &es,
        "t.kasm:18: Program::main @0: bad return: expected exactly one i32 on the stack, found []",
    );
}

#[test]
fn error_display_omits_absent_parts() {
    let e = VerifyError {
        file: "f.kasm".into(),
        line: 3,
        class: String::new(),
        method: None,
        offset: None,
        kind: VerifyErrorKind::NoMain,
    };
    assert_eq!(
        e.to_string(),
        "f.kasm:3: no class defines a static `main` method"
    );
    let e = VerifyError {
        class: "C".into(),
        method: Some("m".into()),
        offset: Some(7),
        ..e
    };
    assert_eq!(
        e.to_string(),
        "f.kasm:3: C::m @7: no class defines a static `main` method"
    );
}

fn with_main_code(ops: &[(Op, Operand)]) -> Library {
    let mut l = lib(&format!(".library t\n{MAIN}"));
    method_mut(&mut l, "Program", "main").code = code(ops);
    l
}

#[test]
fn branch_into_the_middle_of_an_instruction() {
    let l = with_main_code(&[
        (Op::LdcI32, Operand::I32(1)),
        (Op::Br, Operand::Target(2)),
        (Op::Ret, Operand::None),
    ]);
    assert_error(
        &errors(l),
        "branch target 2 is not an instruction of this method",
    );
    let l = with_main_code(&[(Op::Br, Operand::Target(1000)), (Op::Ret, Operand::None)]);
    assert_error(&errors(l), "branch target 1000");
}

#[test]
fn undecodable_code() {
    let mut l = lib(&format!(".library t\n{MAIN}"));
    method_mut(&mut l, "Program", "main").code = vec![Op::Nop as u8, 0xff];
    assert_error(&errors(l), "@1: bad code: invalid opcode 0xff");
    let mut l = lib(&format!(".library t\n{MAIN}"));
    method_mut(&mut l, "Program", "main").code = vec![Op::LdcI64 as u8, 1, 2];
    assert_error(&errors(l), "truncated");
}

#[test]
fn variable_indices_out_of_range() {
    let l = with_main_code(&[
        (Op::Ldarg, Operand::Var(0)),
        (Op::Pop, Operand::None),
        (Op::Ret, Operand::None),
    ]);
    assert_error(&errors(l), "argument index 0 out of range (0 declared)");
    let l = with_main_code(&[
        (Op::LdcI32, Operand::I32(0)),
        (Op::Stloc, Operand::Var(65535)),
        (Op::Ret, Operand::None),
    ]);
    assert_error(&errors(l), "local index 65535 out of range");
}

#[test]
fn operand_table_indices_out_of_range() {
    let l = with_main_code(&[
        (Op::Ldstr, Operand::Str(99)),
        (Op::Pop, Operand::None),
        (Op::Ret, Operand::None),
    ]);
    assert_error(&errors(l), "string index 99 out of range");
    let l = with_main_code(&[
        (Op::Call, Operand::Method(u32::MAX)),
        (Op::Ret, Operand::None),
    ]);
    assert_error(&errors(l), "member reference 4294967295 out of range");
    let l = with_main_code(&[
        (Op::LdcI32, Operand::I32(1)),
        (Op::Newarr, Operand::Type(7)),
        (Op::Pop, Operand::None),
        (Op::Ret, Operand::None),
    ]);
    assert_error(&errors(l), "type reference 7 out of range");
    let mut l = with_main_code(&[(Op::Call, Operand::Method(0)), (Op::Ret, Operand::None)]);
    l.member_refs = vec![MemberRef {
        class: "Exception".into(),
        name: "message".into(),
        kind: MemberKind::Field,
    }];
    assert_error(&errors(l), "`Exception::message` is not a method");
}

#[test]
fn huge_switch_table_is_one_error() {
    let targets = vec![3; 200_000];
    let l = with_main_code(&[
        (Op::LdcI32, Operand::I32(0)),
        (Op::Switch, Operand::Switch(targets)),
        (Op::Ret, Operand::None),
    ]);
    let es = errors(l);
    assert_eq!(es.len(), 1, "{es:?}");
    assert_error(&es, "branch target 3");
}

#[test]
fn deep_stack_is_rejected() {
    let mut ops = vec![(Op::LdcI32, Operand::I32(0)); MAX_STACK + 1];
    ops.push((Op::Ret, Operand::None));
    assert_error(
        &errors(with_main_code(&ops)),
        "evaluation stack deeper than 1024",
    );
}

#[test]
fn random_code_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = lib(".library t
.class public Program {
  .field public static mutable n: atomic i64
  .method public static main(args: string[]) -> i32 {
    .locals (a: i32, b: object, c: f64)
    ldc.i32 0
    ret
  }
}");
    for round in 0..300 {
        let mut l = base.clone();
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Bias towards valid opcodes with small operands.
        for b in bytes.iter_mut() {
            if next() % 3 != 0 {
                *b = Op::ALL[(next() % Op::ALL.len() as u64) as usize] as u8;
            } else {
                *b %= 8;
            }
        }
        let m = method_mut(&mut l, "Program", "main");
        m.code = bytes;
        if round % 2 == 0 {
            let n = m.code.len() as u32;
            let a = (next() % (n as u64 + 2)) as u32;
            let b = (next() % (n as u64 + 2)) as u32;
            m.handlers.push(Handler {
                try_start: a.min(b),
                try_end: a.max(b),
                handler_start: b,
                handler_end: n,
                kind: if round % 4 == 0 {
                    HandlerKind::Finally
                } else {
                    HandlerKind::Catch((next() % 3) as u32)
                },
            });
        }
        l.strings = vec!["s".into()];
        l.type_refs = vec![TypeSig::class("Exception"), TypeSig::Prim(Prim::I32)];
        l.member_refs = vec![
            MemberRef {
                class: "Program".into(),
                name: "n".into(),
                kind: MemberKind::Field,
            },
            MemberRef {
                class: "Std".into(),
                name: "println".into(),
                kind: MemberKind::Method,
            },
        ];
        let _ = run(l);
    }
}

#[test]
fn hostile_hierarchies_terminate() {
    let mut l = lib(&format!(
        ".library t
.class public A {{
  .method public virtual f() {{
    ret
  }}
}}
.class public B : A {{
  .method public override f() {{
    ret
  }}
}}
.interface I {{
  .method g()
}}
.interface J : I {{
  .method h()
}}
{MAIN}"
    ));
    // A : B : A, and I : J : I
    l.types.iter_mut().find(|t| t.name == "A").unwrap().parent = Some("B".into());
    l.types
        .iter_mut()
        .find(|t| t.name == "I")
        .unwrap()
        .interfaces = vec!["J".into()];
    let es = errors(l);
    assert_error(&es, "A: inheritance cycle");
    assert_error(&es, "B: inheritance cycle");
    assert_error(&es, "I: interface inheritance cycle");
}

#[test]
fn duplicate_members_and_missing_base() {
    let mut l = lib(&format!(
        ".library t
.class public A {{
  .field public x: i32
  .method public f() {{
    ret
  }}
}}
{MAIN}"
    ));
    let a = l.types.iter_mut().find(|t| t.name == "A").unwrap();
    a.fields.push(a.fields[0].clone());
    a.methods.push(a.methods[0].clone());
    a.parent = None;
    let es = errors(l);
    assert_error(&es, "duplicate field `x`");
    assert_error(&es, "duplicate method `f`");
    assert_error(&es, "A: class has no base class");
}

#[test]
fn implicit_ctor_of_a_class_without_one() {
    let mut l = lib(".library t
.class public P {
}
.class public Q : P {
  .method public ctor() {
    ldarg this
    call P::ctor
    ret
  }
}
.class public Program {
  .method public static main() {
    newobj P::ctor
    pop
    newobj Q::ctor
    pop
    ret
  }
}");
    // A library not made by the assembler may omit the empty ctor.
    l.types
        .iter_mut()
        .find(|t| t.name == "P")
        .unwrap()
        .methods
        .clear();
    run(l).expect("implicit ctor accepted");
}

#[test]
fn private_classes_stay_in_their_library() {
    let dep = lib(".library dep
.class private Hidden {
}
.class public Open {
}");
    let mut user = lib(".library user
.import dep
.class public Program {
  .method public static main() {
    .locals (o: Open, h: Hidden)
    ret
  }
}");
    user.name = "user".into();
    let es = match run_libs(vec![std_lib(), dep, user]) {
        Ok(_) => panic!("accepted"),
        Err(es) => es.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    assert_eq!(es.len(), 1, "{es:?}");
    assert_error(
        &es,
        "user.kasm:4: Program::main: type `Hidden` is private to its library",
    );
}

#[test]
fn handler_ranges_are_validated() {
    let src = format!(
        ".library t
.class public A {{
  .method public static f() {{
    .try {{
      leave after
    }} finally {{
      endfinally
    }}
  after:
    ret
  }}
}}
{MAIN}"
    );
    let bad = |edit: &dyn Fn(&mut Handler), needle: &str| {
        let mut l = lib(&src);
        edit(&mut method_mut(&mut l, "A", "f").handlers[0]);
        assert_error(&errors(l), needle);
    };
    bad(&|h| h.try_end = 1000, "range beyond the end of the code");
    bad(&|h| h.try_end = 2, "not an instruction boundary");
    bad(
        &|h| h.handler_start = h.try_start,
        "handler overlaps its try block",
    );
    bad(
        &|h| std::mem::swap(&mut h.try_start, &mut h.try_end),
        "empty or reversed range",
    );
    bad(
        &|h| h.kind = HandlerKind::Catch(40),
        "type reference 40 out of range",
    );
    // two clauses whose try blocks overlap without nesting
    let mut l = lib(&src);
    let m = method_mut(&mut l, "A", "f");
    let h = m.handlers[0].clone();
    m.handlers.push(Handler {
        try_start: 5,
        try_end: h.handler_end,
        handler_start: h.handler_end,
        handler_end: m.code.len() as u32,
        kind: HandlerKind::Finally,
    });
    assert_error(&errors(l), "protected blocks overlap without nesting");
}

#[test]
fn entry_into_a_handler_at_method_start() {
    let mut l = lib(&format!(
        ".library t
.class public A {{
  .method public static f() {{
    .try {{
      leave after
    }} finally {{
      endfinally
    }}
  after:
    ret
  }}
}}
{MAIN}"
    ));
    let m = method_mut(&mut l, "A", "f");
    // Swap roles: the handler now starts at offset 0.
    let h = &mut m.handlers[0];
    h.handler_start = 0;
    h.handler_end = 5;
    h.try_start = 5;
    h.try_end = 6;
    assert_error(
        &errors(l),
        "control enters a finally block other than by an exception",
    );
}

#[test]
fn abstract_class_may_leave_interface_methods() {
    let src = ".library t
.class public abstract Partial implements Runnable {
}
.class public Full : Partial {
  .method public run() {
    ret
  }
}
"
    .to_string()
        + MAIN;
    run(lib(&src)).expect("accepted");
    let src = ".library t
.class public abstract Partial implements Runnable {
}
.class public Broken : Partial {
}
"
    .to_string()
        + MAIN;
    let es = errors(lib(&src));
    assert_eq!(es.len(), 1, "{es:?}");
    assert_error(
        &es,
        "t.kasm:4: Broken: non-abstract class does not implement `Runnable::run`",
    );
}

#[test]
fn inherited_public_method_implements_interface() {
    let src = ".library t
.class public Base {
  .method public run() {
    ret
  }
}
.class public Job : Base implements Runnable {
}
.class public Program {
  .method public static main() {
    newobj Job::ctor
    call Thread::start
    callvirt Thread::join
    ret
  }
}";
    run(lib(src)).expect("accepted");
}

#[test]
fn mutability_rules_allow_the_owner() {
    let src = ".library t
.class public Counter {
  .field public count: i64
  .field public static limit: i64
  .field public mutable(self) cache: i64
  .field public static mutable total: atomic u64
  .method public ctor() {
    ldarg this
    ldc.i64 1
    stfld Counter::count
    ret
  }
  .method public static cctor() {
    ldc.i64 10
    stsfld Counter::limit
    ret
  }
  .method public touch() {
    ldarg this
    ldc.i64 2
    stfld Counter::cache
    ret
  }
}
.class public Program {
  .method public static main() {
    ldc.i64 1
    atomic.add Counter::total
    pop
    ldc.i64 1
    ldc.i64 2
    atomic.cas Counter::total
    pop
    atomic.load Counter::total
    call Std::str_u64
    call Std::println
    ret
  }
}";
    run(lib(src)).expect("accepted");
}

#[test]
fn protected_access_from_subclass() {
    let src = ".library t
.class public Base {
  .field protected mutable n: i32
  .method protected bump() {
    ldarg this
    ldarg this
    ldfld Base::n
    ldc.i32 1
    add
    stfld Base::n
    ret
  }
}
.class public Derived : Base {
  .method public go() {
    ldarg this
    call Base::bump
    ret
  }
}
"
    .to_string()
        + MAIN;
    run(lib(&src)).expect("accepted");
}

#[test]
fn require_main_is_an_option() {
    let src = ".library nomain\n.class public C {\n  .method public static f() -> i32 {\n    ldc.i32 1\n    ret\n  }\n}\n";
    let libs = vec![std_lib(), lib(src)];
    let files = vec!["std.kasm".to_string(), "nomain.kasm".to_string()];
    let p = Program::new(libs).expect("no duplicate classes");
    let es = verify_program(&p, &files).expect_err("kiln run needs a main");
    assert!(
        es.iter().any(|e| e.kind == VerifyErrorKind::NoMain),
        "{es:?}"
    );
    let opts = VerifyOptions {
        require_main: false,
    };
    let v = verify_program_with(&p, &files, opts).expect("a host needs no main");
    assert!(!v.methods.is_empty());
    // The body is still verified without the main check.
    let bad = ".library nomain\n.class public C {\n  .method public static f() -> i32 {\n    ret\n  }\n}\n";
    let p = Program::new(vec![std_lib(), lib(bad)]).expect("no duplicate classes");
    assert!(verify_program_with(&p, &files, opts).is_err());
}

#[test]
fn cctor_calls_are_rejected() {
    let es = errors(lib(".library t
.class public Config {
  .field public static count: i64
  .method public static cctor() {
    ldsfld Config::count
    ldc.i64 1
    add
    stsfld Config::count
    call Config::cctor
    ret
  }
  .method public static again() {
    call Config::cctor
    ret
  }
}
.class public Program {
  .method public static main() {
    call Config::cctor
    callvirt Config::cctor
    newobj Config::cctor
    pop
    ret
  }
}"));
    let msg =
        "static constructor `Config::cctor` cannot be called: the runtime runs it once, at load";
    for at in [
        "t.kasm:9: Config::cctor @20: ",
        "t.kasm:13: Config::again @0: ",
        "t.kasm:19: Program::main @0: ",
        "t.kasm:20: Program::main @5: ",
        "t.kasm:21: Program::main @10: ",
    ] {
        assert_error(&es, &format!("{at}{msg}"));
    }
    // One error per call, no follow-on errors.
    assert_eq!(es.len(), 5, "{}", es.join("\n"));
    // The runtime's own use of a cctor (a static store in it) is still fine,
    // and so is calling an ordinary method of a class with a cctor.
    run(lib(".library t
.class public Config {
  .field public static count: i64
  .method public static cctor() {
    ldc.i64 1
    stsfld Config::count
    ret
  }
  .method public static get() -> i64 {
    ldsfld Config::count
    ret
  }
}
.class public Program {
  .method public static main() {
    call Config::get
    pop
    ret
  }
}"))
    .expect("accepted");
}

/// A method that pushes `refs` copies of its string argument, runs `body`
/// `ldloc x; stloc x` pairs over them and pops them again.
fn deep_method(name: &str, refs: usize, body: usize) -> String {
    let mut s =
        format!("  .method public static {name}(s: string) -> i32 {{\n    .locals (x: i32)\n");
    s.push_str(&"    ldarg s\n".repeat(refs));
    s.push_str(&"    ldloc x\n    stloc x\n".repeat(body));
    s.push_str(&"    pop\n".repeat(refs));
    s.push_str("    ldloc x\n    ret\n  }\n");
    s
}

fn method_info(src: &str, class: &str, m: &str) -> MethodInfo {
    let v = run(lib(src)).unwrap_or_else(|e| panic!("rejected: {e:?}"));
    let p = Program::new(vec![std_lib(), lib(src)]).unwrap();
    let mid = p.find_method(p.class(class).unwrap(), m).unwrap();
    v.methods.get(&mid).expect("verified").clone()
}

#[test]
fn deep_stacks_are_shared_not_copied() {
    // 1,000 references across 8,000 instructions: 8 million stack slots if
    // every instruction had its own vector; shared, about one node per
    // instruction.
    let (refs, body) = (1000, 4000);
    let src = format!(
        ".library t\n.class public Program {{\n{}{MAIN_BODY}}}\n",
        deep_method("deep", refs, body),
        MAIN_BODY = "  .method public static main() {\n    ret\n  }\n"
    );
    let info = method_info(&src, "Program", "deep");
    let n = info.insns.len();
    assert_eq!(n, 2 * refs + 2 * body + 2);
    assert!(
        info.stacks().nodes() <= n,
        "{} nodes for {n} instructions",
        info.stacks().nodes()
    );
    assert_eq!(info.max_stack as usize, refs + 1);
    let string = cls("String");
    // Before the first `ldloc`, during the body, before the pops.
    for (i, depth, top) in [
        (refs, refs, string.clone()),
        (refs + 1, refs + 1, VType::I32),
        (refs + 2 * body, refs, string.clone()),
        (2 * refs + 2 * body, 0, string.clone()),
    ] {
        let st = info.stack(i).expect("reachable");
        assert_eq!(st.len(), depth, "depth at {i}");
        if depth > 0 {
            assert_eq!(st.top(), Some(&top), "top at {i}");
        }
        let v = st.to_vec();
        assert_eq!(v.len(), depth);
        assert!(v[..depth.min(refs)].iter().all(|t| *t == string));
    }
    // The collector's map: every string slot, nothing for the i32.
    let map = info.ref_map();
    let mut seen = Vec::new();
    map.for_each(refs + 1, |p| seen.push(p));
    assert_eq!(seen, (0..refs as u32).rev().collect::<Vec<_>>());
    assert!(map.bytes() < 16 * n, "ref map of {} bytes", map.bytes());
    assert!(info.any_stack_type(|t| *t == VType::I32));
    assert!(!info.any_stack_type(|t| *t == VType::I64));
}

#[test]
fn merges_share_nodes() {
    // Two paths bring [A, B, B, ...] and [B, A, A, ...] (A and B unrelated)
    // to 500 join points, each through its own branch: every join point
    // merges to [object, object, ...]. Merging the same two stacks again
    // reuses the first result, so the nodes stay about one per
    // instruction instead of 500 × 300.
    let (depth, joins) = (300, 500);
    let mut s = String::from(
        ".library t\n.class public A { }\n.class public B { }\n.class public Program {\n\
         .method public static f(a: A, b: B, c: i32) {\n    ldarg c\n    brtrue Q\n    ldarg a\n",
    );
    s.push_str(&"    ldarg b\n".repeat(depth - 1));
    for side in ["P", "Q"] {
        if side == "Q" {
            s.push_str("  Q:\n    ldarg b\n");
            s.push_str(&"    ldarg a\n".repeat(depth - 1));
        }
        for j in 0..joins {
            s.push_str(&format!("    ldarg c\n    dup\n    brtrue L{j}\n    pop\n"));
        }
        s.push_str("    ldc.i32 0\n    br L0\n");
    }
    for j in 0..joins {
        s.push_str(&format!("  L{j}:\n    nop\n"));
    }
    s.push_str("    pop\n");
    s.push_str(&"    pop\n".repeat(depth));
    s.push_str("    ret\n  }\n  .method public static main() {\n    ret\n  }\n}\n");
    let info = method_info(&s, "Program", "f");
    let n = info.insns.len();
    let last_join = n - depth - 3;
    assert_eq!(info.insns[last_join].insn.op, Op::Nop);
    let st = info.stack(last_join).unwrap().to_vec();
    assert_eq!(st.len(), depth + 1);
    assert!(st[..depth].iter().all(|t| *t == cls("Object")), "{st:?}");
    assert_eq!(st[depth], VType::I32);
    assert!(
        info.stacks().nodes() <= 2 * n,
        "{} nodes for {n} instructions",
        info.stacks().nodes()
    );
}

#[test]
fn stack_node_bound_is_a_located_error() {
    let src = format!(
        ".library t\n.class public Program {{\n{}  .method public static main() {{\n    ret\n  }}\n}}\n",
        deep_method("deep", 100, 10)
    );
    // Allow 50 nodes: each `ldarg` makes one, so the 52nd `ldarg`
    // (instruction 51, line 5 + 51, offset 3 × 51) finds the bound crossed.
    super::body::NODE_LIMIT.with(|l| l.set(Some((0, 50))));
    let r = run(lib(&src));
    super::body::NODE_LIMIT.with(|l| l.set(None));
    let es: Vec<String> = r.unwrap_err().iter().map(|e| e.to_string()).collect();
    assert_eq!(es.len(), 1, "{}", es.join("\n"));
    assert_eq!(
        es[0],
        "t.kasm:56: Program::deep @153: method too large or complex to verify: its stack types need more than 50 shared stack nodes (limit: 32 per instruction + 131072)"
    );
}

#[test]
fn deep_stacks_in_errors_are_clipped() {
    let mut s =
        String::from(".library t\n.class public Program {\n  .method public static main() {\n");
    s.push_str(&"    ldnull\n".repeat(100));
    s.push_str("    ret\n  }\n}\n");
    let es = errors(lib(&s));
    assert_eq!(
        es,
        vec![format!(
            "t.kasm:104: Program::main @100: bad return: void method returns with stack [(84 more below), {}]",
            vec!["null"; SHOWN].join(", ")
        )]
    );
}
