//! Exchange tests: round trips of graphs built by kasm code (both execution
//! modes, also under GC stress), mismatches, cycles and sharing, limits,
//! every truncation and a mutation loop over a valid encoding.

use super::*;
use crate::runtime::{load, ExecMode, Options};
use crate::vm::thread::call_method;
use std::sync::Arc;

const SRC: &str = r#"
.library xch
.interface Shape {
  .method area() -> f64
}
.class public Sq implements Shape {
  .field public mutable side: f64
  .method public area() -> f64 {
    ldarg this
    ldfld Sq::side
    ldarg this
    ldfld Sq::side
    mul
    ret
  }
}
.class public Inner {
  .field public mutable n: i64
  .field public mutable s: string
}
.class public Base {
  .field public mutable b: bool
}
.class public Rec : Base {
  .field public tag: i64
  .field public mutable c: char
  .field public mutable u: u8
  .field public mutable i: i32
  .field public mutable l: i64
  .field public mutable ul: u64
  .field public mutable f: f32
  .field public mutable d: f64
  .field public mutable al: atomic i64
  .field public mutable ab: atomic bool
  .field public mutable name: string
  .field public mutable none: string
  .field public mutable inner: Inner
  .field public mutable nums: i32[]
  .field public mutable bytes: u8[]
  .field public mutable words: string[]
  .field public mutable kids: Inner[]
  .field public mutable grid: i64[][]
  .field public mutable any: object
  .field public mutable anyarr: object
  .method public ctor() {
    ldarg this
    ldc.i64 77
    stfld Rec::tag
    ret
  }
}
.class public Small {
  .field public mutable l: i64
}
.class public Narrow {
  .field public mutable l: i32
}
.class public Wide {
  .field public mutable l: i64
  .field public mutable extra: string
}
.class public WideRev {
  .field public mutable extra: string
  .field private l: i64
}
.class public Node {
  .field public mutable next: Node
  .field public mutable v: i64
}
.class public Pair {
  .field public mutable left: Inner
  .field public mutable right: Inner
}
.class public Holder {
  .field public mutable shape: Shape
}
.class public Raw {
  .field public mutable p: ptr
}
.class public P {
  .method public static inner(n: i64, s: string) -> Inner {
    .locals (x: Inner)
    newobj Inner::ctor
    stloc x
    ldloc x
    ldarg n
    stfld Inner::n
    ldloc x
    ldarg s
    stfld Inner::s
    ldloc x
    ret
  }
  .method public static build() -> Rec {
    .locals (r: Rec, a: i32[], b: u8[], w: string[], k: Inner[], g: i64[][], row: i64[], fa: f64[])
    newobj Rec::ctor
    stloc r
    ldloc r
    ldc.bool true
    stfld Base::b
    ldloc r
    ldc.char 0x1F600
    stfld Rec::c
    ldloc r
    ldc.i32 200
    stfld Rec::u
    ldloc r
    ldc.i32 -123456
    stfld Rec::i
    ldloc r
    ldc.i64 -9000000000
    stfld Rec::l
    ldloc r
    ldc.i64 -1
    stfld Rec::ul
    ldloc r
    ldc.f32 1.5
    stfld Rec::f
    ldloc r
    ldc.f64 nan
    stfld Rec::d
    ldloc r
    ldc.i64 42
    stfld Rec::al
    ldloc r
    ldc.bool true
    stfld Rec::ab
    ldloc r
    ldstr "héllo"
    stfld Rec::name
    ldloc r
    ldc.i64 5
    ldstr "five"
    call P::inner
    stfld Rec::inner
    ldc.i32 3
    newarr i32
    stloc a
    ldloc a
    ldc.i32 0
    ldc.i32 10
    stelem i32
    ldloc a
    ldc.i32 2
    ldc.i32 -30
    stelem i32
    ldloc r
    ldloc a
    stfld Rec::nums
    ldc.i32 2
    newarr u8
    stloc b
    ldloc b
    ldc.i32 1
    ldc.i32 255
    stelem u8
    ldloc r
    ldloc b
    stfld Rec::bytes
    ldc.i32 3
    newarr string
    stloc w
    ldloc w
    ldc.i32 0
    ldstr "a"
    stelem string
    ldloc w
    ldc.i32 2
    ldstr "a"
    stelem string
    ldloc r
    ldloc w
    stfld Rec::words
    ldc.i32 2
    newarr Inner
    stloc k
    ldloc k
    ldc.i32 1
    ldc.i64 9
    ldstr "nine"
    call P::inner
    stelem Inner
    ldloc r
    ldloc k
    stfld Rec::kids
    ldc.i32 2
    newarr i64[]
    stloc g
    ldc.i32 1
    newarr i64
    stloc row
    ldloc row
    ldc.i32 0
    ldc.i64 -7
    stelem i64
    ldloc g
    ldc.i32 1
    ldloc row
    stelem i64[]
    ldloc r
    ldloc g
    stfld Rec::grid
    ldloc r
    ldstr "any"
    stfld Rec::any
    ldc.i32 2
    newarr f64
    stloc fa
    ldloc fa
    ldc.i32 1
    ldc.f64 2.25
    stelem f64
    ldloc r
    ldloc fa
    stfld Rec::anyarr
    ldloc r
    ret
  }
  ; A checksum of the graph, computed by kasm code.
  .method public static sum(r: Rec) -> i64 {
    ldarg r
    ldfld Rec::l
    ldarg r
    ldfld Rec::i
    conv.i64
    add
    ldarg r
    ldfld Rec::inner
    ldfld Inner::n
    add
    ldarg r
    ldfld Rec::nums
    ldc.i32 2
    ldelem i32
    conv.i64
    add
    ldarg r
    ldfld Rec::kids
    ldc.i32 1
    ldelem Inner
    ldfld Inner::n
    add
    ldarg r
    ldfld Rec::grid
    ldc.i32 1
    ldelem i64[]
    ldc.i32 0
    ldelem i64
    add
    ldarg r
    ldfld Rec::name
    call Std::len
    conv.i64
    add
    ldarg r
    ldfld Rec::tag
    add
    ldarg r
    ldfld Rec::al
    add
    ret
  }
  .method public static small(l: i64) -> Small {
    .locals (s: Small)
    newobj Small::ctor
    stloc s
    ldloc s
    ldarg l
    stfld Small::l
    ldloc s
    ret
  }
  .method public static list(n: i32) -> Node {
    .locals (h: Node, x: Node)
  top:
    ldarg n
    ldc.i32 0
    ble done
    newobj Node::ctor
    stloc x
    ldloc x
    ldloc h
    stfld Node::next
    ldloc x
    ldarg n
    conv.i64
    stfld Node::v
    ldloc x
    stloc h
    ldarg n
    ldc.i32 1
    sub
    starg n
    br top
  done:
    ldloc h
    ret
  }
  .method public static cycle() -> Node {
    .locals (a: Node, b: Node)
    newobj Node::ctor
    stloc a
    newobj Node::ctor
    stloc b
    ldloc a
    ldloc b
    stfld Node::next
    ldloc b
    ldloc a
    stfld Node::next
    ldloc a
    ret
  }
  .method public static shared() -> Pair {
    .locals (p: Pair, x: Inner)
    newobj Pair::ctor
    stloc p
    ldc.i64 1
    ldstr "x"
    call P::inner
    stloc x
    ldloc p
    ldloc x
    stfld Pair::left
    ldloc p
    ldloc x
    stfld Pair::right
    ldloc p
    ret
  }
  .method public static holder() -> Holder {
    .locals (h: Holder)
    newobj Holder::ctor
    stloc h
    ldloc h
    newobj Sq::ctor
    stfld Holder::shape
    ldloc h
    ret
  }
  .method public static main() {
    ret
  }
}
"#;

fn runtime(mode: ExecMode, gc_stress: bool) -> Arc<Runtime> {
    let dir = std::env::temp_dir().join(format!("kiln-exchange-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("xch.kasm");
    if !p.exists() {
        let tmp = dir.join(format!("xch.{:?}.tmp", std::thread::current().id()));
        std::fs::write(&tmp, SRC).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }
    let (program, files, verified) = load::load_verified(&p).unwrap_or_else(|e| panic!("{e:?}"));
    let opts = Options {
        mode,
        stack_size: 16 << 20,
        heap_max: 16 << 20,
        gc_stress,
        ..Options::default()
    };
    let rt = Arc::new(
        crate::engine::new_runtime(program, files, &verified, opts)
            .unwrap_or_else(|e| panic!("{e:?}")),
    );
    if mode == ExecMode::Jit {
        crate::engine::install_jit(&rt, verified).unwrap();
    }
    rt.set_shared();
    rt
}

/// Run `f` on a thread with a 16 MiB stack, attached to a runtime in `mode`.
fn with_rt(mode: ExecMode, gc_stress: bool, f: impl FnOnce(&Runtime, &mut ThreadCtx) + Send) {
    let rt = runtime(mode, gc_stress);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn_scoped(s, || {
                let mut ctx = ThreadCtx::new(&*rt, 16 << 20);
                // SAFETY: `ctx` outlives the attachment.
                let _att = unsafe { crate::runtime::roots::attach(&rt, &mut ctx) };
                f(&rt, &mut ctx);
            })
            .unwrap()
            .join()
            .unwrap();
    });
}

fn both_modes(gc_stress: bool, f: impl Fn(&Runtime, &mut ThreadCtx) + Send + Sync) {
    for mode in [ExecMode::Interp, ExecMode::Jit] {
        with_rt(mode, gc_stress, &f);
    }
}

/// Call static method `name` with `args`; the result (an object) is pushed
/// on the handle scope.
fn call(rt: &Runtime, ctx: &mut ThreadCtx, name: &str, args: &[u64]) -> u64 {
    let mh = rt
        .tables
        .all_methods()
        .find(|m| rt.method_name(m) == name)
        .unwrap_or_else(|| panic!("no method {name}")) as *const _;
    // SAFETY: a static method of this runtime with these arguments.
    let r = unsafe { call_method(ctx, mh, args.as_ptr()) };
    assert!(!ctx.has_pending(), "{name} threw");
    r
}

fn obj(rt: &Runtime, ctx: &mut ThreadCtx, name: &str, args: &[u64]) -> *mut u8 {
    let o = call(rt, ctx, name, args) as *mut u8;
    ctx.roots.push(o);
    o
}

fn class(rt: &Runtime, name: &str) -> *const ClassDesc {
    rt.tables.class_named(&rt.program, name).unwrap()
}

/// Deep, field-by-field comparison through the metadata (floats bitwise);
/// objects and arrays must be distinct copies.
///
/// # Safety
/// `a` and `b` are null or live objects of `rt`'s heap, and no collection
/// runs during the comparison.
unsafe fn same(rt: &Runtime, a: *mut u8, b: *mut u8, path: &str) {
    if a.is_null() || b.is_null() {
        assert!(a.is_null() && b.is_null(), "{path}: null vs non-null");
        return;
    }
    // SAFETY: both are live objects (caller contract); every read follows
    // the object's own class metadata.
    unsafe {
        let (ca, cb) = (&*class_of(a), &*class_of(b));
        assert_eq!(ca.name(), cb.name(), "{path}: class");
        if std::ptr::eq(ca, rt.string_class) {
            assert_eq!(string_bytes(a), string_bytes(b), "{path}: string");
            return;
        }
        assert_ne!(a, b, "{path}: not a copy");
        if ca.kind == kind::ARRAY {
            let n = array_len(a);
            assert_eq!(n, array_len(b), "{path}: length");
            let (da, db) = (a.add(ARRAY_DATA_OFFSET), b.add(ARRAY_DATA_OFFSET));
            if ca.elem_item_type == 0 {
                for i in 0..n as usize {
                    same(
                        rt,
                        *(da.add(i * 8) as *const *mut u8),
                        *(db.add(i * 8) as *const *mut u8),
                        &format!("{path}[{i}]"),
                    );
                }
            } else {
                let len = n as usize * ca.elem_size as usize;
                assert_eq!(
                    std::slice::from_raw_parts(da, len),
                    std::slice::from_raw_parts(db, len),
                    "{path}: elements"
                );
            }
            return;
        }
        let id = rt.program.class(ca.name()).unwrap();
        for f in fields_of(rt, id) {
            let p = format!("{path}.{}", f.name);
            if f.item == 0 {
                same(
                    rt,
                    *(a.add(f.offset) as *const *mut u8),
                    *(b.add(f.offset) as *const *mut u8),
                    &p,
                );
            } else {
                let n = item_size(f.item).unwrap();
                assert_eq!(
                    std::slice::from_raw_parts(a.add(f.offset), n),
                    std::slice::from_raw_parts(b.add(f.offset), n),
                    "{p}"
                );
            }
        }
    }
}

#[test]
fn field_id_is_fnv1a_64_low_56_bits() {
    // FNV-1a 64 of "" is 0xcbf29ce484222325, of "a" 0xaf63dc4c8601ec8c.
    assert_eq!(field_id(""), [0x25, 0x23, 0x22, 0x84, 0xe4, 0x9c, 0xf2]);
    assert_eq!(field_id("a"), [0x8c, 0xec, 0x01, 0x86, 0x4c, 0xdc, 0x63]);
}

#[test]
fn round_trip_every_kind_of_field() {
    for stress in [false, true] {
        both_modes(stress, |rt, ctx| {
            let r = obj(rt, ctx, "P::build", &[]);
            // SAFETY: a rooted object; no allocation during export.
            let bytes = unsafe { export(rt, r) }.unwrap();
            // SAFETY: attached context; `r` is rooted.
            let r2 = unsafe { import(rt, ctx, class(rt, "Rec"), &bytes) }.unwrap();
            ctx.roots.push(r2);
            // SAFETY: both live.
            unsafe { same(rt, r, r2, "Rec") };
            let s1 = call(rt, ctx, "P::sum", &[r as u64]);
            let s2 = call(rt, ctx, "P::sum", &[r2 as u64]);
            assert_eq!(s1, s2);
            assert_eq!(
                s1 as i64,
                -9000000000 - 123456 + 5 - 30 + 9 - 7 + 6 + 77 + 42
            );
            // Re-export gives the same bytes.
            // SAFETY: rooted.
            assert_eq!(unsafe { export(rt, r2) }.unwrap(), bytes);
        });
    }
}

#[test]
fn encoding_layout() {
    with_rt(ExecMode::Interp, false, |rt, ctx| {
        let s = obj(rt, ctx, "P::small", &[0x0102_0304_0506_0708]);
        // SAFETY: rooted.
        let b = unsafe { export(rt, s) }.unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&24u32.to_le_bytes()); // size: 8 + 8 + 8
        want.extend_from_slice(&1u32.to_le_bytes()); // one field
        want.extend_from_slice(&field_id("l"));
        want.push(4 | (3 << 4)); // i64, public mutable
        want.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(b, want);
    });
}

#[test]
fn missing_fields_default_extra_fields_rejected() {
    both_modes(false, |rt, ctx| {
        let s = obj(rt, ctx, "P::small", &[5]);
        // SAFETY: rooted.
        let b = unsafe { export(rt, s) }.unwrap();
        // Wide has `l` and a field the encoding lacks: it stays null.
        // SAFETY: attached.
        let w = unsafe { import(rt, ctx, class(rt, "Wide"), &b) }.unwrap();
        // SAFETY: `w` is a live Wide.
        unsafe {
            let id = rt.program.class("Wide").unwrap();
            let fs = fields_of(rt, id);
            assert_eq!(*(w.add(fs[0].offset) as *const i64), 5);
            assert!((*(w.add(fs[1].offset) as *const *mut u8)).is_null());
        }
        ctx.roots.push(w);
        // SAFETY: rooted.
        let wb = unsafe { export(rt, w) }.unwrap();
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Small"), &wb) }.unwrap_err();
        let want_path = format!(
            "Small.#{}",
            field_id("extra")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(
            e,
            ExchangeError::UnknownField {
                offset: 24,
                path: want_path,
                class: "Small".into()
            }
        );
        // Fields are matched by id, not position (and flags are not checked:
        // WideRev::l is private and immutable).
        let mut w2 = wb.clone();
        // Give `extra` a value so the reordered import has something to move.
        w2.truncate(24 + 8);
        w2.push(REF_STRING);
        w2.extend_from_slice(&2u32.to_le_bytes());
        w2.extend_from_slice(b"ex");
        let size = w2.len() as u32;
        w2[0..4].copy_from_slice(&size.to_le_bytes());
        // SAFETY: attached.
        let rev = unsafe { import(rt, ctx, class(rt, "WideRev"), &w2) }.unwrap();
        // SAFETY: `rev` is a live WideRev.
        unsafe {
            let id = rt.program.class("WideRev").unwrap();
            let fs = fields_of(rt, id);
            assert_eq!(fs[0].name, "extra");
            assert_eq!(
                string_bytes(*(rev.add(fs[0].offset) as *const *mut u8)),
                b"ex"
            );
            assert_eq!(*(rev.add(fs[1].offset) as *const i64), 5);
        }
        // Same name, other type.
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Narrow"), &b) }.unwrap_err();
        assert_eq!(
            e,
            ExchangeError::TypeMismatch {
                offset: 15,
                path: "Narrow.l".into(),
                expected: "i32".into(),
                found: "i64".into()
            }
        );
        assert!(e.to_string().contains("Narrow.l"), "{e}");
        // Rec bytes into Small: the first field (Base.b) is unknown.
        let r = obj(rt, ctx, "P::build", &[]);
        // SAFETY: rooted / attached.
        let rb = unsafe { export(rt, r) }.unwrap();
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Small"), &rb) }.unwrap_err();
        assert!(
            matches!(e, ExchangeError::UnknownField { offset: 8, .. }),
            "{e}"
        );
    });
}

#[test]
fn cycles_and_shared_objects_are_errors_strings_may_be_shared() {
    both_modes(false, |rt, ctx| {
        let c = obj(rt, ctx, "P::cycle", &[]);
        // SAFETY: rooted.
        let e = unsafe { export(rt, c) }.unwrap_err();
        assert!(
            matches!(&e, ExchangeError::Cycle { path, .. } if path == "Node.next.next"),
            "{e}"
        );
        let p = obj(rt, ctx, "P::shared", &[]);
        // SAFETY: rooted.
        let e = unsafe { export(rt, p) }.unwrap_err();
        assert!(
            matches!(&e, ExchangeError::Shared { path, .. } if path == "Pair.right"),
            "{e}"
        );
        // Rec::words holds the interned "a" twice: fine.
        let r = obj(rt, ctx, "P::build", &[]);
        // SAFETY: rooted.
        assert!(unsafe { export(rt, r) }.is_ok());
    });
}

#[test]
fn roots_that_are_not_objects_and_unsupported_fields() {
    with_rt(ExecMode::Jit, false, |rt, ctx| {
        // SAFETY: null is allowed.
        let e = unsafe { export(rt, std::ptr::null_mut()) }.unwrap_err();
        assert!(matches!(e, ExchangeError::NotAnObject { .. }));
        let s = rt.new_string(b"str").unwrap();
        ctx.roots.push(s);
        // SAFETY: a live string.
        let e = unsafe { export(rt, s) }.unwrap_err();
        assert!(matches!(e, ExchangeError::NotAnObject { .. }), "{e}");
        // SAFETY: attached; descriptors of this runtime.
        unsafe {
            for c in ["Shape", "String", "Base"] {
                let cd = class(rt, c);
                let r = import(rt, ctx, cd, &[8, 0, 0, 0, 0, 0, 0, 0]);
                if c == "Base" {
                    assert!(r.is_ok(), "Base is instantiable");
                } else {
                    assert!(matches!(r, Err(ExchangeError::NotAnObject { .. })), "{c}");
                }
            }
        }
        // A raw pointer field.
        let raw = class(rt, "Raw");
        // SAFETY: a fresh Raw object (rooted below before anything allocates).
        let o = unsafe { rt.alloc_object(raw) }.unwrap();
        ctx.roots.push(o);
        // SAFETY: rooted.
        let e = unsafe { export(rt, o) }.unwrap_err();
        assert!(
            matches!(&e, ExchangeError::Unsupported { path, .. } if path == "Raw.p"),
            "{e}"
        );
        let mut b = Vec::new();
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&field_id("p"));
        b.push(8 | (3 << 4));
        b.extend_from_slice(&0x4141_4141u64.to_le_bytes());
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, raw, &b) }.unwrap_err();
        assert!(
            matches!(&e, ExchangeError::Unsupported { path, .. } if path == "Raw.p"),
            "{e}"
        );
        // A nested object for an interface-typed field: which class?
        let h = obj(rt, ctx, "P::holder", &[]);
        // SAFETY: rooted.
        let hb = unsafe { export(rt, h) }.unwrap();
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Holder"), &hb) }.unwrap_err();
        assert!(
            matches!(&e, ExchangeError::NoClass { path, declared, .. } if path == "Holder.shape" && declared == "Shape"),
            "{e}"
        );
    });
}

#[test]
fn depth_limit_in_both_directions() {
    both_modes(false, |rt, ctx| {
        let l = obj(rt, ctx, "P::list", &[50]);
        let small = Limits {
            max_depth: 10,
            ..Limits::default()
        };
        // SAFETY: rooted.
        let e = unsafe { export_with(rt, l, &small) }.unwrap_err();
        assert!(matches!(e, ExchangeError::TooDeep { limit: 10, .. }), "{e}");
        // SAFETY: rooted.
        let b = unsafe { export(rt, l) }.unwrap();
        // SAFETY: attached.
        let e = unsafe { import_with(rt, ctx, class(rt, "Node"), &b, &small) }.unwrap_err();
        assert!(matches!(e, ExchangeError::TooDeep { limit: 10, .. }), "{e}");
        // SAFETY: attached.
        let l2 = unsafe { import(rt, ctx, class(rt, "Node"), &b) }.unwrap();
        ctx.roots.push(l2);
        // SAFETY: both live.
        unsafe { same(rt, l, l2, "Node") };
        // A hand-made encoding nested 100 000 deep (`next` objects all the
        // way down): an error at the default limit, not a stack overflow.
        let next = field_id("next");
        let depth = 100_000usize;
        let mut enc = Vec::new();
        for _ in 0..depth {
            // size 0 for now (malformed: below the header size)
            enc.extend_from_slice(&0u32.to_le_bytes());
            enc.extend_from_slice(&1u32.to_le_bytes());
            enc.extend_from_slice(&next);
            enc.push(3 << 4);
            enc.push(REF_OBJECT);
        }
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Node"), &enc) }.unwrap_err();
        assert!(matches!(e, ExchangeError::Malformed { .. }), "{e}");
        // With sizes that fit (each record claims all that follows).
        let total = enc.len() + 1;
        enc.push(REF_NULL);
        for d in 0..depth {
            let at = d * 17;
            let size = (total - at) as u32;
            enc[at..at + 4].copy_from_slice(&size.to_le_bytes());
        }
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Node"), &enc) }.unwrap_err();
        assert!(
            matches!(e, ExchangeError::TooDeep { limit: 1000, .. }),
            "{e}"
        );
    });
}

#[test]
fn oversized_lengths_fail_before_allocating() {
    with_rt(ExecMode::Interp, false, |rt, ctx| {
        // Rec-less: Wide { l, extra: string } with a 4 GiB string length.
        let mut b = Vec::new();
        b.extend_from_slice(&40u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&field_id("extra"));
        b.push(3 << 4);
        b.push(REF_STRING);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        b.resize(40, 0);
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Wide"), &b) }.unwrap_err();
        assert!(
            matches!(&e, ExchangeError::Truncated { path, need, .. } if path == "Wide.extra" && *need == u32::MAX as u64),
            "{e}"
        );
        // An i32[] of 2^32-1 elements (would be 16 GiB, the heap is 16 MiB):
        // Truncated, not OutOfMemory, proving the check comes first.
        let r = obj(rt, ctx, "P::build", &[]);
        // SAFETY: rooted.
        let mut rb = unsafe { export(rt, r) }.unwrap();
        let nums = field_id("nums");
        let at = rb.windows(7).position(|w| w == nums).unwrap();
        assert_eq!(rb[at + 8], REF_ARRAY);
        assert_eq!(rb[at + 9], ITEM_I32);
        rb[at + 10..at + 14].copy_from_slice(&u32::MAX.to_le_bytes());
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Rec"), &rb) }.unwrap_err();
        assert!(
            matches!(&e, ExchangeError::Truncated { path, .. } if path == "Rec.nums"),
            "{e}"
        );
        // An object claiming more bytes than there are.
        let mut s = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Small"), &s) }.unwrap_err();
        assert!(
            matches!(e, ExchangeError::Truncated { offset: 0, .. }),
            "{e}"
        );
        // A field count that cannot fit.
        s[..4].copy_from_slice(&8u32.to_le_bytes());
        s[4..8].copy_from_slice(&1000u32.to_le_bytes());
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Small"), &s) }.unwrap_err();
        assert!(
            matches!(e, ExchangeError::Malformed { offset: 4, .. }),
            "{e}"
        );
        // Trailing bytes.
        s[4..8].copy_from_slice(&0u32.to_le_bytes());
        s.push(0);
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Small"), &s) }.unwrap_err();
        assert_eq!(
            e,
            ExchangeError::TrailingBytes {
                offset: 8,
                count: 1
            }
        );
    });
}

#[test]
fn bad_values_are_malformed() {
    with_rt(ExecMode::Interp, false, |rt, ctx| {
        let r = obj(rt, ctx, "P::build", &[]);
        // SAFETY: rooted.
        let good = unsafe { export(rt, r) }.unwrap();
        let at_of = |name: &str| good.windows(7).position(|w| w == field_id(name)).unwrap();
        let cases: Vec<(usize, u8, &str)> = vec![
            (at_of("b") + 8, 2, "bool byte 2"),
            (at_of("c") + 8, 0, "not a Unicode scalar"), // made 0xD800 below
            (at_of("name") + 8, 9, "bad reference kind 9"),
            (at_of("nums") + 9, 12, "bad array element type 12"),
            (at_of("l") + 7, 0x84, "bit 7 set"),
            (at_of("l") + 7, 0x3f, "unknown item type 15"),
        ];
        for (off, byte, what) in cases {
            let mut b = good.clone();
            b[off] = byte;
            if what == "not a Unicode scalar" {
                // Make the char 0xD800 (a surrogate).
                let c = at_of("c") + 8;
                b[c..c + 4].copy_from_slice(&0xD800u32.to_le_bytes());
            }
            // SAFETY: attached.
            let e = unsafe { import(rt, ctx, class(rt, "Rec"), &b) }.unwrap_err();
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
        // A field encoded twice.
        let s = obj(rt, ctx, "P::small", &[1]);
        // SAFETY: rooted.
        let mut b = unsafe { export(rt, s) }.unwrap();
        let f = b[8..24].to_vec();
        b.extend_from_slice(&f);
        b[0..4].copy_from_slice(&40u32.to_le_bytes());
        b[4..8].copy_from_slice(&2u32.to_le_bytes());
        // SAFETY: attached.
        let e = unsafe { import(rt, ctx, class(rt, "Small"), &b) }.unwrap_err();
        assert_eq!(
            e,
            ExchangeError::DuplicateField {
                offset: 24,
                path: "Small.l".into()
            }
        );
    });
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn every_truncation_and_mutations_never_panic() {
    for stress in [false, true] {
        with_rt(ExecMode::Jit, stress, |rt, ctx| {
            let r = obj(rt, ctx, "P::build", &[]);
            // SAFETY: rooted.
            let good = unsafe { export(rt, r) }.unwrap();
            let rec = class(rt, "Rec");
            for n in 0..good.len() {
                // SAFETY: attached.
                let e = unsafe { import(rt, ctx, rec, &good[..n]) };
                assert!(e.is_err(), "prefix {n} accepted");
            }
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let (mut ok, mut err) = (0, 0);
            let rounds = if stress { 300 } else { 3000 };
            for _ in 0..rounds {
                let mut b = good.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(b.len());
                    match rng.below(6) {
                        0 => b[i] ^= 1 << rng.below(8),
                        1 => b[i] = rng.next() as u8,
                        2 => b[i] = 0xff,
                        3 => {
                            let j = (i & !3).min(b.len().saturating_sub(4));
                            let v =
                                [0u32, 1, 0x7fff_ffff, u32::MAX, rng.next() as u32][rng.below(5)];
                            b[j..j + 4].copy_from_slice(&v.to_le_bytes());
                        }
                        4 => {
                            b.remove(i);
                        }
                        _ => b.insert(i, rng.next() as u8),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                // SAFETY: attached.
                match unsafe { import(rt, ctx, rec, &b) } {
                    Ok(o) => {
                        ok += 1;
                        ctx.roots.push(o);
                        // Whatever was accepted is a well-formed graph.
                        // SAFETY: rooted.
                        let again = unsafe { export(rt, o) };
                        assert!(again.is_ok(), "{again:?}");
                        ctx.roots.pop();
                    }
                    Err(e) => {
                        err += 1;
                        assert!(!e.to_string().is_empty());
                    }
                }
            }
            assert!(err > 0 && ok + err == rounds);
        });
    }
}
