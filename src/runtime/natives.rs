//! The built-in natives: ONE table ([`NATIVES`]) of `(class, method, Rust fn)`,
//! bound to `native` methods at load (an unbound native is a load error).
//!
//! A native receives the untyped argument slots of the calling convention
//! (receiver first; `i32`/`bool`/`char` sign-extended, `f64` as bits,
//! references as addresses) and returns its result the same way, or a
//! [`Fault`] that the native adapter turns into a pending exception.
//! Natives never allocate except through the runtime's allocation entry
//! points (which may collect: the calling frame is at a call safepoint and
//! the arguments are in its slots, so they stay alive; natives copy string
//! bytes out before allocating and hold no other reference across an
//! allocation). Natives that block (output, `Thread::join`) run inside
//! `safepoint::native_scope`.

use crate::vm::fault::{Fault, FaultKind};

use crate::vm::object::{string_bytes, StrHeader};
use crate::vm::thread::ThreadCtx;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

use crate::ir::Intrinsic;
pub use crate::vm::tables::NativeFn;

/// Every built-in native: class, method, implementation, and the
/// [`Intrinsic`] compiled code computes instead of calling it (bit for bit
/// the same result).
pub const NATIVES: &[(&str, &str, NativeFn, Option<Intrinsic>)] = &[
    ("Std", "print", std_print, None),
    ("Std", "println", std_println, None),
    ("Std", "str_i64", std_str_i64, None),
    ("Std", "str_u64", std_str_u64, None),
    ("Std", "str_f64", std_str_f64, None),
    ("Std", "str_bool", std_str_bool, None),
    ("Std", "str_char", std_str_char, None),
    ("Std", "concat", std_concat, None),
    ("Std", "len", std_len, None),
    ("Std", "byte_at", std_byte_at, None),
    ("Std", "str_eq", std_str_eq, None),
    ("Std", "hash", std_hash, None),
    ("Std", "sqrt", std_sqrt, Some(Intrinsic::Sqrt)),
    ("Std", "clock_ns", std_clock_ns, None),
    ("Std", "gc", std_gc, None),
    ("Std", "sin", |_, a| f1(a, f64::sin), None),
    ("Std", "cos", |_, a| f1(a, f64::cos), None),
    ("Std", "tan", |_, a| f1(a, f64::tan), None),
    ("Std", "asin", |_, a| f1(a, f64::asin), None),
    ("Std", "acos", |_, a| f1(a, f64::acos), None),
    ("Std", "atan", |_, a| f1(a, f64::atan), None),
    ("Std", "atan2", |_, a| f2(a, f64::atan2), None),
    ("Std", "exp", |_, a| f1(a, f64::exp), None),
    ("Std", "ln", |_, a| f1(a, f64::ln), None),
    ("Std", "log10", |_, a| f1(a, f64::log10), None),
    ("Std", "log2", |_, a| f1(a, f64::log2), None),
    ("Std", "pow", |_, a| f2(a, f64::powf), None),
    ("Std", "cbrt", |_, a| f1(a, f64::cbrt), None),
    ("Std", "hypot", |_, a| f2(a, f64::hypot), None),
    (
        "Std",
        "floor",
        |_, a| f1(a, f64::floor),
        Some(Intrinsic::Floor),
    ),
    (
        "Std",
        "ceil",
        |_, a| f1(a, f64::ceil),
        Some(Intrinsic::Ceil),
    ),
    (
        "Std",
        "trunc",
        |_, a| f1(a, f64::trunc),
        Some(Intrinsic::Trunc),
    ),
    (
        "Std",
        "round",
        |_, a| f1(a, f64::round_ties_even),
        Some(Intrinsic::Nearest),
    ),
    ("Std", "abs", |_, a| f1(a, f64::abs), Some(Intrinsic::Abs)),
    (
        "Std",
        "copysign",
        |_, a| f2(a, f64::copysign),
        Some(Intrinsic::Copysign),
    ),
    ("Std", "min", |_, a| f2(a, fmin), None),
    ("Std", "max", |_, a| f2(a, fmax), None),
    (
        "Std",
        "fma",
        |_, a| {
            Ok(f64::from_bits(a[0])
                .mul_add(f64::from_bits(a[1]), f64::from_bits(a[2]))
                .to_bits())
        },
        None,
    ),
    ("Std", "abs_i64", std_abs_i64, None),
    (
        "Std",
        "min_i64",
        |_, a| Ok((a[0] as i64).min(a[1] as i64) as u64),
        None,
    ),
    (
        "Std",
        "max_i64",
        |_, a| Ok((a[0] as i64).max(a[1] as i64) as u64),
        None,
    ),
    ("Std", "add_exact", std_add_exact, None),
    ("Std", "mul_exact", std_mul_exact, None),
    ("StringBuilder", "append", sb_append, None),
    (
        "StringBuilder",
        "append_i64",
        |t, a| sb_text(t, a, &(a[1] as i64).to_string()),
        None,
    ),
    (
        "StringBuilder",
        "append_u64",
        |t, a| sb_text(t, a, &a[1].to_string()),
        None,
    ),
    ("StringBuilder", "append_f64", sb_append_f64, None),
    (
        "StringBuilder",
        "append_bool",
        |t, a| sb_text(t, a, if a[1] as u32 != 0 { "true" } else { "false" }),
        None,
    ),
    ("StringBuilder", "append_char", sb_append_char, None),
    ("StringBuilder", "length", sb_length, None),
    ("StringBuilder", "clear", sb_clear, None),
    ("StringBuilder", "to_string", sb_to_string, None),
    ("Thread", "start", thread_start, None),
    ("Thread", "join", thread_join, None),
];

/// Find the native bound to `class::method`.
pub fn lookup(class: &str, method: &str) -> Option<NativeFn> {
    NATIVES
        .iter()
        .find(|(c, m, _, _)| *c == class && *m == method)
        .map(|&(_, _, f, _)| f)
}

/// The built-in `class::method`'s implementation and intrinsic, if it is one.
pub fn intrinsic(class: &str, method: &str) -> Option<(NativeFn, Intrinsic)> {
    NATIVES
        .iter()
        .find(|(c, m, _, _)| *c == class && *m == method)
        .and_then(|&(_, _, f, i)| Some((f, i?)))
}

/// A unary `f64` native.
fn f1(a: &[u64], f: fn(f64) -> f64) -> Result<u64, Fault> {
    Ok(f(f64::from_bits(a[0])).to_bits())
}

/// A binary `f64` native.
fn f2(a: &[u64], f: fn(f64, f64) -> f64) -> Result<u64, Fault> {
    Ok(f(f64::from_bits(a[0]), f64::from_bits(a[1])).to_bits())
}

/// IEEE 754-2019 `minimum`: NaN if either is NaN, and −0 below +0.
fn fmin(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

/// IEEE 754-2019 `maximum`: NaN if either is NaN, and +0 above −0.
fn fmax(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_positive() {
            a
        } else {
            b
        }
    } else if a > b {
        a
    } else {
        b
    }
}

fn overflow(what: String) -> Fault {
    Fault::new(FaultKind::Arithmetic, format!("integer overflow: {what}"))
}

fn std_abs_i64(_t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let v = a[0] as i64;
    v.checked_abs()
        .map(|r| r as u64)
        .ok_or_else(|| overflow(format!("abs({v})")))
}

fn std_add_exact(_t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let (x, y) = (a[0] as i64, a[1] as i64);
    x.checked_add(y)
        .map(|r| r as u64)
        .ok_or_else(|| overflow(format!("{x} + {y}")))
}

fn std_mul_exact(_t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let (x, y) = (a[0] as i64, a[1] as i64);
    x.checked_mul(y)
        .map(|r| r as u64)
        .ok_or_else(|| overflow(format!("{x} * {y}")))
}

fn str_arg<'a>(v: u64, what: &str) -> Result<&'a [u8], Fault> {
    if v == 0 {
        return Err(Fault::null(&format!("{what} is null")));
    }
    // SAFETY: a non-null string-typed argument is a live string (verified code).
    Ok(unsafe { string_bytes(v as *const u8) })
}

fn new_str(t: &mut ThreadCtx, bytes: &[u8]) -> Result<u64, Fault> {
    t.rt().new_string(bytes).map(|p| p as u64)
}

fn write_out(t: &mut ThreadCtx, bytes: &[u8], newline: bool) {
    // Writing may block on the pipe: count as stopped meanwhile. The lock is
    // only taken in native state, so no stopped thread ever holds it. The
    // bytes belong to a string in the caller's frame (a root); it does not
    // move.
    let _n = crate::safepoint::native_scope();
    let mut o = t.rt().out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = o.write_all(bytes);
    if newline {
        let _ = o.write_all(b"\n");
    }
}

fn std_print(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let s = str_arg(a[0], "Std::print argument")?;
    write_out(t, s, false);
    Ok(0)
}

fn std_println(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let s = str_arg(a[0], "Std::println argument")?;
    write_out(t, s, true);
    Ok(0)
}

fn std_str_i64(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    new_str(t, (a[0] as i64).to_string().as_bytes())
}

fn std_str_u64(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    new_str(t, a[0].to_string().as_bytes())
}

/// `Std::str_f64` formatting: C's `%.*f` on the exact binary value.
pub fn format_f64(v: f64, decimals: i32) -> Result<String, Fault> {
    if !(0..=30).contains(&decimals) {
        return Err(Fault::new(
            FaultKind::Arithmetic,
            format!("Std::str_f64: decimals {decimals} is outside 0..=30"),
        ));
    }
    if v.is_nan() {
        return Ok("NaN".into());
    }
    if v.is_infinite() {
        return Ok(if v > 0.0 { "inf".into() } else { "-inf".into() });
    }
    // Rust's fixed-precision formatting is exact (round half to even on the
    // exact binary value), like glibc's printf.
    Ok(format!("{:.*}", decimals as usize, v))
}

fn std_str_f64(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let s = format_f64(f64::from_bits(a[0]), a[1] as i32)?;
    new_str(t, s.as_bytes())
}

fn std_str_bool(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    new_str(t, if a[0] as u32 != 0 { b"true" } else { b"false" })
}

fn std_str_char(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let c = a[0] as u32;
    let ch = char::from_u32(c).ok_or_else(|| {
        Fault::new(
            FaultKind::InvalidCast,
            format!("Std::str_char: 0x{c:x} is not a Unicode scalar value"),
        )
    })?;
    let mut buf = [0u8; 4];
    new_str(t, ch.encode_utf8(&mut buf).as_bytes())
}

fn std_concat(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let x = str_arg(a[0], "Std::concat first argument")?;
    let y = str_arg(a[1], "Std::concat second argument")?;
    let mut v = Vec::with_capacity(x.len() + y.len());
    v.extend_from_slice(x);
    v.extend_from_slice(y);
    new_str(t, &v)
}

fn std_len(_t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    Ok(str_arg(a[0], "Std::len argument")?.len() as i32 as i64 as u64)
}

fn std_byte_at(_t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let s = str_arg(a[0], "Std::byte_at string")?;
    let i = a[1] as i32;
    if i < 0 || i as usize >= s.len() {
        return Err(Fault::new(
            FaultKind::IndexOutOfRange,
            format!(
                "Std::byte_at: index {i} is out of range for a string of {} bytes",
                s.len()
            ),
        ));
    }
    Ok(s[i as usize] as u64)
}

fn std_str_eq(_t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let x = str_arg(a[0], "Std::str_eq first argument")?;
    let y = str_arg(a[1], "Std::str_eq second argument")?;
    Ok((x == y) as u64)
}

fn std_hash(_t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    str_arg(a[0], "Std::hash argument")?;
    // SAFETY: non-null string (checked above); the hash is computed at creation.
    let h = unsafe { (*(a[0] as *const StrHeader)).hash_code };
    Ok(h as i32 as i64 as u64)
}

fn std_sqrt(_t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    Ok(f64::from_bits(a[0]).sqrt().to_bits())
}

fn std_clock_ns(_t: &mut ThreadCtx, _a: &[u64]) -> Result<u64, Fault> {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(Instant::now);
    Ok(e.elapsed().as_nanos() as i64 as u64)
}

fn std_gc(t: &mut ThreadCtx, _a: &[u64]) -> Result<u64, Fault> {
    // The caller is at a call safepoint: its frames' references are in their slots.
    crate::runtime::roots::collect(t.rt(), crate::heap::gc::Reason::Explicit);
    Ok(0)
}

fn thread_start(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    if a[0] == 0 {
        return Err(Fault::null("Thread::start argument is null"));
    }
    // SAFETY: the runtime outlives every thread context (each thread holds
    // an Arc); a separate borrow so `t`'s handle scope can be used.
    let rt = unsafe { &*(t.runtime as *const super::Runtime) };
    // SAFETY: thread_class is the live Thread descriptor. The runnable is
    // argument 0, a slot of the caller's frame (a root) across the allocation.
    let obj = unsafe { rt.alloc_object(rt.thread_class) }?;
    // Starting the thread waits for it in a native section, where a
    // collection can run: the new object is held in the handle scope.
    t.roots.push(obj);
    // SAFETY: non-null receiver checked above; verified code passes a live Runnable.
    let id = unsafe { rt.spawn_runnable(a[0] as *mut u8) };
    t.roots.pop();
    let id = id?;
    // SAFETY: the handle field lies inside every Thread object.
    unsafe { *(obj.add(rt.thread_handle_offset) as *mut i64) = id as i64 };
    Ok(obj as u64)
}

fn thread_join(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    if a[0] == 0 {
        return Err(Fault::null("Thread::join receiver is null"));
    }
    // SAFETY: the runtime outlives every thread context (each thread holds
    // an Arc); a separate borrow so `t` can be passed on mutably.
    let rt = unsafe { &*(t.runtime as *const super::Runtime) };
    // SAFETY: the receiver is a live Thread object.
    let id = unsafe { *((a[0] as *const u8).add(rt.thread_handle_offset) as *const i64) };
    rt.flush_stdout();
    rt.join_thread(t, id as usize)?;
    Ok(0)
}

/// The receiver of a `StringBuilder` native, checked for null.
fn sb_receiver(b: u64) -> Result<*mut u8, Fault> {
    if b == 0 {
        return Err(Fault::null("StringBuilder receiver is null"));
    }
    Ok(b as *mut u8)
}

/// The builder `b`'s buffer and length.
///
/// # Safety
/// `b` is a live `StringBuilder`.
unsafe fn sb_parts(t: &ThreadCtx, b: *mut u8) -> (*mut u8, usize) {
    let (buf_off, len_off) = t.rt().builder_fields;
    // SAFETY: caller contract; the fields lie inside every StringBuilder.
    unsafe {
        (
            *(b.add(buf_off) as *const *mut u8),
            *(b.add(len_off) as *const i32) as usize,
        )
    }
}

/// Append `bytes` to the builder `b` (growing its buffer by doubling) and
/// return `b`. `bytes` must not point into the managed heap unless the
/// object holding them is a root (an allocation may collect; objects do
/// not move).
fn sb_push(t: &mut ThreadCtx, b: u64, bytes: &[u8]) -> Result<u64, Fault> {
    let obj = sb_receiver(b)?;
    // SAFETY: `b` is the live receiver.
    let (buf, len) = unsafe { sb_parts(t, obj) };
    // SAFETY: `buf` is the builder's live u8[] (set by its ctor or below).
    let cap = unsafe { crate::vm::object::array_len(buf) } as usize;
    let need = len
        .checked_add(bytes.len())
        .filter(|&n| n <= i32::MAX as usize)
        .ok_or_else(|| {
            Fault::new(
                FaultKind::OutOfMemory,
                "StringBuilder: text longer than 2,147,483,647 bytes",
            )
        })?;
    let (buf_off, len_off) = t.rt().builder_fields;
    let mut dst = buf;
    if need > cap {
        let new_cap = need.max(cap.saturating_mul(2)).min(i32::MAX as usize);
        let rt = t.rt();
        let ty = crate::library::TypeSig::Array(Box::new(crate::library::TypeSig::Prim(
            crate::library::Prim::U8,
        )));
        let class = rt.tables.array_class(&rt.program, &ty);
        // The receiver (and a string argument) are in the caller's frame:
        // roots across this allocation, which may collect.
        // SAFETY: `class` is the live u8[] descriptor.
        let fresh = unsafe { rt.alloc_array(class, new_cap as i64) }?;
        // SAFETY: both arrays are live, `len <= cap` bytes of the old one are
        // text, and the new one has `new_cap >= len` elements.
        unsafe {
            let (old, _) = sb_parts(t, obj);
            std::ptr::copy_nonoverlapping(
                old.add(crate::vm::object::ARRAY_DATA_OFFSET),
                fresh.add(crate::vm::object::ARRAY_DATA_OFFSET),
                len,
            );
            *(obj.add(buf_off) as *mut *mut u8) = fresh;
        }
        dst = fresh;
    }
    // SAFETY: `dst` has at least `need` elements; `bytes` does not overlap it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            dst.add(crate::vm::object::ARRAY_DATA_OFFSET + len),
            bytes.len(),
        );
        *(obj.add(len_off) as *mut i32) = need as i32;
    }
    Ok(b)
}

fn sb_text(t: &mut ThreadCtx, a: &[u64], s: &str) -> Result<u64, Fault> {
    sb_push(t, a[0], s.as_bytes())
}

fn sb_append(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    // Copied out first: the string stays live (a caller frame slot), but
    // growing the buffer allocates.
    let s = str_arg(a[1], "StringBuilder::append argument")?.to_vec();
    sb_push(t, a[0], &s)
}

fn sb_append_f64(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let s = format_f64(f64::from_bits(a[1]), a[2] as i32)?;
    sb_push(t, a[0], s.as_bytes())
}

fn sb_append_char(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let c = a[1] as u32;
    let ch = char::from_u32(c).ok_or_else(|| {
        Fault::new(
            FaultKind::InvalidCast,
            format!("StringBuilder::append_char: 0x{c:x} is not a Unicode scalar value"),
        )
    })?;
    let mut buf = [0u8; 4];
    sb_push(t, a[0], ch.encode_utf8(&mut buf).as_bytes())
}

fn sb_length(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let b = sb_receiver(a[0])?;
    // SAFETY: the live receiver.
    let (_, len) = unsafe { sb_parts(t, b) };
    Ok(len as i32 as i64 as u64)
}

fn sb_clear(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let b = sb_receiver(a[0])?;
    let (_, len_off) = t.rt().builder_fields;
    // SAFETY: the live receiver; `len` lies inside it.
    unsafe { *(b.add(len_off) as *mut i32) = 0 };
    Ok(0)
}

fn sb_to_string(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    let b = sb_receiver(a[0])?;
    // SAFETY: the live receiver.
    let (buf, len) = unsafe { sb_parts(t, b) };
    // Copied out: the string allocation may collect (the builder, a root,
    // keeps the buffer alive, and nothing moves, but a copy keeps this
    // simple to argue).
    // SAFETY: `buf` holds at least `len` bytes of text.
    let text = unsafe {
        std::slice::from_raw_parts(buf.add(crate::vm::object::ARRAY_DATA_OFFSET), len).to_vec()
    };
    new_str(t, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_f64_like_printf() {
        // expected values from python3 '%.Nf' % x (glibc semantics)
        let cases: &[(f64, i32, &str)] = &[
            (0.125, 2, "0.12"),
            (0.375, 2, "0.38"),
            (2.5, 0, "2"),
            (3.5, 0, "4"),
            (1.005, 2, "1.00"),
            (-0.0, 3, "-0.000"),
            (-0.0001, 2, "-0.00"),
            (3.14158, 3, "3.142"),
            (1e21, 1, "1000000000000000000000.0"),
            (0.1, 20, "0.10000000000000000555"),
            (123.456, 0, "123"),
            (f64::NAN, 2, "NaN"),
            (f64::INFINITY, 2, "inf"),
            (f64::NEG_INFINITY, 0, "-inf"),
        ];
        for &(v, d, want) in cases {
            assert_eq!(format_f64(v, d).unwrap(), want, "{v} with {d}");
        }
        assert_eq!(format_f64(1.0, 31).unwrap_err().kind, FaultKind::Arithmetic);
        assert_eq!(format_f64(1.0, -1).unwrap_err().kind, FaultKind::Arithmetic);
        assert_eq!(
            format_f64(1.0, 30).unwrap(),
            format!("1.{}", "0".repeat(30))
        );
    }

    #[test]
    fn table_is_unique() {
        for (i, a) in NATIVES.iter().enumerate() {
            for b in &NATIVES[i + 1..] {
                assert!(
                    !(a.0 == b.0 && a.1 == b.1),
                    "duplicate native {}::{}",
                    a.0,
                    a.1
                );
            }
        }
        assert!(lookup("Std", "println").is_some());
        assert!(lookup("Std", "nope").is_none());
    }
}
