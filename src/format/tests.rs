//! Unit tests of the `.klib` format: round trips, determinism, one test per
//! error class (variant and offset), truncation at every length and a
//! deterministic byte-mutation loop that must never panic.

use super::*;
use crate::bytecode::{encode, Op, Operand, OperandKind};
use crate::library::*;

/// Encodes `insns`, returning the code and the offset of each instruction.
fn code_of(insns: &[(Op, Operand)]) -> (Vec<u8>, Vec<u32>) {
    let mut code = Vec::new();
    let mut offs = Vec::new();
    for (op, operand) in insns {
        offs.push(code.len() as u32);
        encode(&mut code, *op, operand);
    }
    (code, offs)
}

fn method(name: &str) -> MethodDef {
    MethodDef {
        name: name.to_string(),
        access: Access::Public,
        flags: MethodFlags::default(),
        params: vec![],
        ret: None,
        locals: vec![],
        code: vec![],
        handlers: vec![],
        lines: vec![],
        attrs: vec![],
        line: 0,
    }
}

fn class(name: &str) -> TypeDef {
    TypeDef {
        name: name.to_string(),
        kind: TypeKind::Class,
        access: Access::Public,
        is_abstract: false,
        is_sealed: false,
        parent: Some(OBJECT.to_string()),
        interfaces: vec![],
        fields: vec![],
        methods: vec![],
        properties: vec![],
        attrs: vec![],
        line: 1,
    }
}

fn var(name: &str, ty: TypeSig) -> Var {
    Var {
        name: name.to_string(),
        ty,
    }
}

fn arg(name: Option<&str>, value: AttrValue) -> AttrArg {
    AttrArg {
        name: name.map(str::to_string),
        value,
    }
}

/// A library that uses every feature of the format.
fn rich() -> Library {
    let mut type_refs: Vec<TypeSig> = Prim::ALL.iter().map(|&p| TypeSig::Prim(p)).collect();
    type_refs.extend([
        TypeSig::Atomic(Prim::Bool),
        TypeSig::Atomic(Prim::U8),
        TypeSig::Atomic(Prim::I64),
        TypeSig::Atomic(Prim::U64),
        TypeSig::class("ArithmeticException"),
        TypeSig::Array(Box::new(TypeSig::Array(Box::new(TypeSig::class(STRING))))),
        TypeSig::Array(Box::new(TypeSig::Prim(Prim::F64))),
        TypeSig::Array(Box::new(TypeSig::Atomic(Prim::U64))),
    ]);
    let catch_ty = 14u32; // ArithmeticException
    assert_eq!(
        type_refs[catch_ty as usize],
        TypeSig::class("ArithmeticException")
    );

    let member_refs = vec![
        MemberRef {
            class: "Circle".into(),
            name: "r".into(),
            kind: MemberKind::Field,
        },
        MemberRef {
            class: "Circle".into(),
            name: "area".into(),
            kind: MemberKind::Method,
        },
        MemberRef {
            class: "Std".into(),
            name: "println".into(),
            kind: MemberKind::Method,
        },
        MemberRef {
            class: "Circle".into(),
            name: "count".into(),
            kind: MemberKind::Field,
        },
    ];

    // A method with a catch and a finally clause and a line table.
    let (code, o) = code_of(&[
        (Op::LdcI32, Operand::I32(1)),
        (Op::LdcI32, Operand::I32(0)),
        (Op::Div, Operand::None),
        (Op::Pop, Operand::None),
        (Op::Leave, Operand::Target(24)),
        (Op::Pop, Operand::None),
        (Op::Leave, Operand::Target(24)),
        (Op::Endfinally, Operand::None),
        (Op::Ldstr, Operand::Str(2)),
        (Op::Call, Operand::Method(2)),
        (Op::Ret, Operand::None),
    ]);
    assert_eq!(o[8], 24);
    let mut guarded = method("guarded");
    guarded.flags.is_static = true;
    guarded.code = code;
    guarded.handlers = vec![
        Handler {
            try_start: 0,
            try_end: o[5],
            handler_start: o[5],
            handler_end: o[7],
            kind: HandlerKind::Catch(catch_ty),
        },
        Handler {
            try_start: 0,
            try_end: o[7],
            handler_start: o[7],
            handler_end: o[8],
            kind: HandlerKind::Finally,
        },
    ];
    guarded.lines = vec![
        LineEntry {
            offset: 0,
            line: 40,
        },
        LineEntry {
            offset: o[2],
            line: 41,
        },
        LineEntry {
            offset: o[2],
            line: 41,
        },
        LineEntry {
            offset: o[8],
            line: 45,
        },
    ];
    guarded.line = 39;

    // A method containing every opcode, with in-range operands.
    let all: Vec<(Op, Operand)> = Op::ALL
        .iter()
        .map(|&op| {
            let operand = match op.operand_kind() {
                OperandKind::None => Operand::None,
                OperandKind::I32 => Operand::I32(-5),
                OperandKind::I64 => Operand::I64(i64::MIN),
                OperandKind::F32 => Operand::F32(f32::from_bits(0x7fc0_1234)),
                OperandKind::F64 => Operand::F64(-0.0),
                OperandKind::Bool => Operand::Bool(true),
                OperandKind::Char => Operand::Char(0x1F600),
                OperandKind::Str => Operand::Str(1),
                OperandKind::Var => Operand::Var(65535),
                OperandKind::Target => Operand::Target(0),
                OperandKind::Switch => Operand::Switch(vec![0, 1, 0]),
                OperandKind::Method => Operand::Method(1),
                OperandKind::Field => Operand::Field(3),
                OperandKind::Type => Operand::Type(17),
            };
            (op, operand)
        })
        .collect();
    let mut every = method("every_op");
    every.access = Access::Protected;
    every.flags = MethodFlags {
        is_virtual: true,
        is_override: true,
        ..Default::default()
    };
    every.code = code_of(&all).0;
    every.params = vec![
        var("a", TypeSig::Prim(Prim::I64)),
        var("b", type_refs[16].clone()),
    ];
    every.locals = Prim::ALL
        .iter()
        .map(|&p| var(p.name(), TypeSig::Prim(p)))
        .collect();
    every.ret = Some(TypeSig::Array(Box::new(TypeSig::class("Circle"))));

    let mut ctor = method("ctor");
    ctor.params = vec![var("r", TypeSig::Prim(Prim::F64))];
    ctor.code = code_of(&[
        (Op::Ldarg, Operand::Var(0)),
        (Op::Ldarg, Operand::Var(1)),
        (Op::Stfld, Operand::Field(0)),
        (Op::Ret, Operand::None),
    ])
    .0;
    ctor.lines = vec![LineEntry {
        offset: 0,
        line: 12,
    }];

    let mut native = method("clock_ns");
    native.flags = MethodFlags {
        is_static: true,
        is_native: true,
        ..Default::default()
    };
    native.ret = Some(TypeSig::Prim(Prim::I64));
    native.access = Access::Private;
    native.attrs = vec![Attribute {
        name: "Host".into(),
        args: vec![],
    }];

    let mut abs = method("area");
    abs.flags = MethodFlags {
        is_abstract: true,
        is_virtual: true,
        ..Default::default()
    };
    abs.ret = Some(TypeSig::Prim(Prim::F64));

    let mut shape = class("Shape");
    shape.kind = TypeKind::Interface;
    shape.parent = None;
    shape.interfaces = vec!["Runnable".into()];
    shape.methods = vec![abs.clone()];

    let mut circle = class("Circle");
    circle.is_sealed = true;
    circle.interfaces = vec!["Shape".into(), "Runnable".into()];
    circle.attrs = vec![Attribute {
        name: "Doc".into(),
        args: vec![
            arg(None, AttrValue::Str("a circle".into())),
            arg(Some("version"), AttrValue::Int(2)),
            arg(Some("min"), AttrValue::Int(i64::MIN)),
            arg(Some("ratio"), AttrValue::Float(1.5)),
            arg(Some("negzero"), AttrValue::Float(-0.0)),
            arg(Some("inf"), AttrValue::Float(f64::NEG_INFINITY)),
            arg(Some("yes"), AttrValue::Bool(true)),
            arg(Some("no"), AttrValue::Bool(false)),
            arg(Some("c"), AttrValue::Char('✓' as u32)),
            arg(Some("surrogate"), AttrValue::Char(0xD800)),
            arg(None, AttrValue::Str(String::new())),
        ],
    }];
    let combos = [
        (Access::Private, Mutability::Immutable),
        (Access::Private, Mutability::Mutable),
        (Access::Public, Mutability::Immutable),
        (Access::Public, Mutability::Mutable),
        (Access::Public, Mutability::MutableSelf),
        (Access::Protected, Mutability::Immutable),
        (Access::Protected, Mutability::Mutable),
        (Access::Protected, Mutability::MutableSelf),
    ];
    for (i, (access, mutability)) in combos.into_iter().enumerate() {
        for is_static in [false, true] {
            circle.fields.push(FieldDef {
                name: format!("f{i}_{is_static}"),
                ty: type_refs[(i * 3 + is_static as usize) % type_refs.len()].clone(),
                access,
                mutability,
                is_static,
                attrs: if i == 3 {
                    vec![Attribute {
                        name: "Tag".into(),
                        args: vec![arg(None, AttrValue::Int(i as i64))],
                    }]
                } else {
                    vec![]
                },
                line: 100 + i as u32,
            });
        }
    }
    circle.fields.push(FieldDef {
        name: "count".into(),
        ty: TypeSig::Atomic(Prim::I64),
        access: Access::Public,
        mutability: Mutability::Mutable,
        is_static: true,
        attrs: vec![],
        line: u32::MAX,
    });
    circle.properties = vec![
        PropertyDef {
            name: "R".into(),
            ty: TypeSig::Prim(Prim::F64),
            access: Access::Public,
            getter: Some("get_r".into()),
            setter: None,
            attrs: vec![Attribute {
                name: "Doc".into(),
                args: vec![arg(None, AttrValue::Str("radius".into()))],
            }],
            line: 20,
        },
        PropertyDef {
            name: "W".into(),
            ty: TypeSig::class("Circle"),
            access: Access::Protected,
            getter: None,
            setter: Some("set_w".into()),
            attrs: vec![],
            line: 21,
        },
        PropertyDef {
            name: "Both".into(),
            ty: TypeSig::Array(Box::new(TypeSig::Prim(Prim::Char))),
            access: Access::Private,
            getter: Some("g".into()),
            setter: Some("s".into()),
            attrs: vec![],
            line: 22,
        },
    ];
    circle.methods = vec![ctor, guarded, every, native];

    let mut base = class("AbstractBase");
    base.is_abstract = true;
    base.access = Access::Private;
    base.parent = Some("Circle".into());
    base.methods = vec![abs];

    Library {
        name: "geometry".into(),
        imports: vec![
            Import {
                name: "other".into(),
                line: 2,
            },
            Import {
                name: "more_ünïcode".into(),
                line: 0,
            },
        ],
        strings: vec![
            "hello".into(),
            String::new(),
            "line\n\"quoted\" \u{1F600}".into(),
            "geometry".into(),
        ],
        type_refs,
        member_refs,
        types: vec![shape, circle, base, class("Empty")],
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn add_u32(b: &mut [u8], at: usize, delta: i64) {
    let v = (u32_at(b, at) as i64 + delta) as u32;
    put_u32(b, at, v);
}

fn meta_off(b: &[u8]) -> usize {
    u32_at(b, header::META_OFF) as usize
}

fn code_off(b: &[u8]) -> usize {
    u32_at(b, header::CODE_OFF) as usize
}

/// A library with one class `T` holding one method `m` whose code is `insns`.
fn one_method(insns: &[(Op, Operand)]) -> Library {
    let mut m = method("m");
    m.code = code_of(insns).0;
    let mut t = class("T");
    t.parent = None;
    t.methods = vec![m];
    Library {
        name: "t".into(),
        strings: vec!["s".into()],
        ..Default::default()
    }
    .with_type(t)
}

trait WithType {
    fn with_type(self, t: TypeDef) -> Library;
}

impl WithType for Library {
    fn with_type(mut self, t: TypeDef) -> Library {
        self.types.push(t);
        self
    }
}

fn err(bytes: &[u8]) -> FormatError {
    match read(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            // Display must work and name the offset.
            let text = e.to_string();
            assert!(text.starts_with(&format!("byte {} ", e.offset())), "{text}");
            e
        }
    }
}

#[test]
fn rich_library_round_trips() {
    let lib = rich();
    let bytes = write(&lib);
    let back = read(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, lib);
    assert_eq!(write(&back), bytes);
}

#[test]
fn empty_library_round_trips() {
    let lib = Library::default();
    let bytes = write(&lib);
    assert_eq!(read(&bytes).unwrap(), lib);
}

#[test]
fn header_layout() {
    let bytes = write(&rich());
    assert_eq!(&bytes[0..4], b"KLIB");
    assert_eq!(&bytes[4..8], &[2, 0, 0, 0]);
    assert_eq!(u32_at(&bytes, header::FLAGS), 0);
    assert_eq!(u32_at(&bytes, header::HEAP_OFF) as usize, HEADER_SIZE);
    let heap_len = u32_at(&bytes, header::HEAP_LEN) as usize;
    assert_eq!(meta_off(&bytes), HEADER_SIZE + heap_len);
    let meta_len = u32_at(&bytes, header::META_LEN) as usize;
    assert_eq!(code_off(&bytes), meta_off(&bytes) + meta_len);
    assert_eq!(
        code_off(&bytes) + u32_at(&bytes, header::CODE_LEN) as usize,
        bytes.len()
    );
}

#[test]
fn writer_is_deterministic() {
    let lib = rich();
    let a = write(&lib);
    for _ in 0..5 {
        assert_eq!(write(&lib.clone()), a);
    }
    // Names are stored once: "Circle" appears in many places but once in the file.
    let hits = a.windows(6).filter(|w| w == b"Circle").count();
    assert_eq!(hits, 1);
}

#[test]
fn float_attrs_are_bit_exact() {
    let weird = [
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff0_0000_dead_beef),
        -0.0,
        f64::MIN_POSITIVE / 2.0,
    ];
    let mut t = class("A");
    t.attrs = vec![Attribute {
        name: "F".into(),
        args: weird
            .iter()
            .map(|&f| arg(None, AttrValue::Float(f)))
            .collect(),
    }];
    let lib = Library {
        name: "a".into(),
        ..Default::default()
    }
    .with_type(t);
    let back = read(&write(&lib)).unwrap();
    let got: Vec<u64> = back.types[0].attrs[0]
        .args
        .iter()
        .map(|a| match a.value {
            AttrValue::Float(f) => f.to_bits(),
            _ => panic!("not a float"),
        })
        .collect();
    let want: Vec<u64> = weird.iter().map(|f| f.to_bits()).collect();
    assert_eq!(got, want);
}

#[test]
fn private_mutable_self_is_stored_as_private_mutable() {
    let mut t = class("A");
    t.fields.push(FieldDef {
        name: "x".into(),
        ty: TypeSig::Prim(Prim::I32),
        access: Access::Private,
        mutability: Mutability::MutableSelf,
        is_static: false,
        attrs: vec![],
        line: 3,
    });
    let lib = Library {
        name: "a".into(),
        ..Default::default()
    }
    .with_type(t);
    let back = read(&write(&lib)).unwrap();
    assert_eq!(back.types[0].fields[0].access, Access::Private);
    assert_eq!(back.types[0].fields[0].mutability, Mutability::Mutable);
}

#[test]
fn sig_depth_limit() {
    let nest = |depth: usize| {
        let mut s = TypeSig::Prim(Prim::I64);
        for _ in 0..depth {
            s = TypeSig::Array(Box::new(s));
        }
        Library {
            name: "t".into(),
            type_refs: vec![s],
            ..Default::default()
        }
    };
    let ok = nest(MAX_SIG_DEPTH);
    assert_eq!(read(&write(&ok)).unwrap(), ok);
    let bytes = write(&nest(MAX_SIG_DEPTH + 1));
    // meta: name(4) import count(4) literal count(4) typeref count(4), then the sig.
    let sig_at = meta_off(&bytes) + 16;
    assert_eq!(
        err(&bytes),
        FormatError::SigTooDeep {
            offset: sig_at + MAX_SIG_DEPTH,
            limit: MAX_SIG_DEPTH
        }
    );
}

#[test]
fn error_bad_magic() {
    let mut b = write(&rich());
    b[0] = b'X';
    assert!(matches!(err(&b), FormatError::BadMagic { offset: 0, .. }));
    assert!(matches!(
        err(b"\x7fELF"),
        FormatError::BadMagic { offset: 0, .. }
    ));
    assert!(matches!(err(b""), FormatError::Truncated { offset: 0, .. }));
}

#[test]
fn error_unsupported_version() {
    for major in [1, 3] {
        // 1.x had no import lines: a layout change, so a major bump
        let mut b = write(&rich());
        b[header::MAJOR] = major;
        assert_eq!(
            err(&b),
            FormatError::UnsupportedVersion {
                offset: 4,
                major: major as u16,
                minor: 0
            }
        );
    }
    let mut b = write(&rich());
    b[header::MINOR] = 1;
    assert_eq!(
        err(&b),
        FormatError::UnsupportedVersion {
            offset: 4,
            major: 2,
            minor: 1
        }
    );
}

#[test]
fn error_header_flags() {
    let mut b = write(&rich());
    b[header::FLAGS + 3] = 0x80;
    assert_eq!(
        err(&b),
        FormatError::FlagsOutOfRange {
            offset: 8,
            what: "header flags",
            value: 0x8000_0000
        }
    );
}

#[test]
fn error_truncated() {
    let b = write(&rich());
    assert!(matches!(
        err(&b[..20]),
        FormatError::Truncated {
            offset: 0,
            what: "header",
            ..
        }
    ));
    let e = err(&b[..b.len() - 1]);
    assert!(
        matches!(e, FormatError::Truncated { offset: 0, needed, available, .. }
        if needed == b.len() && available == b.len() - 1)
    );
    // A section length that cuts the heap short: the heap runs out.
    let mut b = write(&rich());
    let heap_len = u32_at(&b, header::HEAP_LEN);
    put_u32(&mut b, header::HEAP_LEN, heap_len - 1);
    add_u32(&mut b, header::META_OFF, -1);
    add_u32(&mut b, header::META_LEN, 1);
    assert!(matches!(
        err(&b),
        FormatError::Truncated {
            what: "string bytes",
            ..
        }
    ));
}

#[test]
fn error_bad_section() {
    let mut b = write(&rich());
    put_u32(&mut b, header::HEAP_OFF, 40);
    assert_eq!(
        err(&b),
        FormatError::BadSection {
            offset: 12,
            section: "string heap offset",
            value: 40,
            expected: 36
        }
    );
    let mut b = write(&rich());
    let m = meta_off(&b) as u32;
    put_u32(&mut b, header::META_OFF, m + 1);
    assert!(matches!(
        err(&b),
        FormatError::BadSection { offset: 20, .. }
    ));
    let mut b = write(&rich());
    put_u32(&mut b, header::CODE_OFF, u32::MAX);
    assert!(matches!(
        err(&b),
        FormatError::BadSection { offset: 28, .. }
    ));
    // Lengths near u32::MAX must not overflow.
    let mut b = write(&rich());
    put_u32(&mut b, header::CODE_LEN, u32::MAX);
    assert!(matches!(err(&b), FormatError::Truncated { offset: 0, .. }));
}

#[test]
fn error_count_too_large() {
    let mut b = write(&rich());
    let at = meta_off(&b) + 4; // import count
    put_u32(&mut b, at, u32::MAX);
    assert!(matches!(
        err(&b),
        FormatError::CountTooLarge { offset, what: "import", count: u32::MAX, .. } if offset == at
    ));
    let mut b = write(&rich());
    put_u32(&mut b, HEADER_SIZE, 0x4000_0000); // heap entry count
    assert!(matches!(
        err(&b),
        FormatError::CountTooLarge { offset: 36, .. }
    ));
}

#[test]
fn error_index_out_of_range() {
    let mut b = write(&rich());
    let at = meta_off(&b); // library name
    put_u32(&mut b, at, 100_000);
    assert!(matches!(
        err(&b),
        FormatError::IndexOutOfRange { offset, table: "string heap", index: 100_000, .. } if offset == at
    ));
    // A catch clause naming a type ref that does not exist.
    let mut lib = one_method(&[(Op::Ret, Operand::None)]);
    lib.type_refs = vec![TypeSig::class("E")];
    lib.types[0].methods[0].handlers = vec![Handler {
        try_start: 0,
        try_end: 1,
        handler_start: 1,
        handler_end: 1,
        kind: HandlerKind::Catch(0),
    }];
    let mut b = write(&lib);
    // body: len(4) code(1) handler count(4) then try/try/handler/handler(16) kind(1) type(4)
    let ty_at = code_off(&b) + 4 + 1 + 4 + 16 + 1;
    assert_eq!(u32_at(&b, ty_at), 0);
    put_u32(&mut b, ty_at, 1);
    assert!(matches!(
        err(&b),
        FormatError::IndexOutOfRange { offset, index: 1, len: 1, .. } if offset == ty_at
    ));
}

#[test]
fn error_invalid_utf8() {
    let lib = Library {
        name: "abc".into(),
        ..Default::default()
    };
    let mut b = write(&lib);
    // heap: count(4) at 36, first entry length at 40, bytes at 44.
    assert_eq!(&b[44..47], b"abc");
    b[45] = 0xff;
    assert_eq!(err(&b), FormatError::InvalidUtf8 { offset: 45 });
}

#[test]
fn error_bad_tag() {
    let lib = Library {
        name: "t".into(),
        type_refs: vec![TypeSig::Prim(Prim::I64)],
        ..Default::default()
    };
    let mut b = write(&lib);
    let at = meta_off(&b) + 16;
    assert_eq!(b[at], 4);
    b[at] = 0x55;
    assert_eq!(
        err(&b),
        FormatError::BadTag {
            offset: at,
            what: "type signature",
            tag: 0x55
        }
    );
    // void is only a return type
    b[at] = 0;
    assert!(matches!(err(&b), FormatError::BadTag { offset, tag: 0, .. } if offset == at));
    // member reference kind
    let lib = Library {
        name: "t".into(),
        member_refs: vec![MemberRef {
            class: "A".into(),
            name: "b".into(),
            kind: MemberKind::Field,
        }],
        ..Default::default()
    };
    let mut b = write(&lib);
    let at = meta_off(&b) + 16; // name, imports, literals, typerefs, member ref count
    let at = at + 4;
    b[at] = 7;
    assert_eq!(
        err(&b),
        FormatError::BadTag {
            offset: at,
            what: "member reference kind",
            tag: 7
        }
    );
}

#[test]
fn error_field_and_method_flags() {
    let mut t = class("A");
    t.parent = None;
    t.fields.push(FieldDef {
        name: "x".into(),
        ty: TypeSig::Prim(Prim::I32),
        access: Access::Public,
        mutability: Mutability::Mutable,
        is_static: true,
        attrs: vec![],
        line: 3,
    });
    let lib = Library {
        name: "a".into(),
        ..Default::default()
    }
    .with_type(t);
    let mut b = write(&lib);
    // meta: name(4) 4 counts(16) type: name(4) flags(1) access(1) parent(4) line(4)
    // iface count(4) attr count(4) field count(4), field: name(4) then flags.
    let at = meta_off(&b) + 24 + 26 + 4;
    assert_eq!(b[at], 3 | 8);
    b[at] = 0x13;
    assert_eq!(
        err(&b),
        FormatError::FlagsOutOfRange {
            offset: at,
            what: "field flags",
            value: 0x13
        }
    );

    let mut b = write(&one_method(&[(Op::Ret, Operand::None)]));
    // meta: name, import count, literal count + one literal, typeref count,
    // member ref count, type count (28 bytes); the type record's fixed part is
    // 34 bytes; the method: name(4) access(1) then flags.
    let type_at = meta_off(&b) + 28;
    let at = type_at + 34 + 4 + 1;
    assert_eq!(b[at], 0);
    b[at] = 0x20;
    assert_eq!(
        err(&b),
        FormatError::FlagsOutOfRange {
            offset: at,
            what: "method flags",
            value: 0x20
        }
    );
    b[at] = 0;
    b[type_at + 4] = 8;
    assert!(matches!(
        err(&b),
        FormatError::FlagsOutOfRange {
            what: "type flags",
            value: 8,
            ..
        }
    ));
}

#[test]
fn error_trailing_bytes() {
    let mut b = write(&rich());
    let n = b.len();
    b.push(0);
    assert_eq!(
        err(&b),
        FormatError::TrailingBytes {
            offset: n,
            section: "code section",
            count: 1
        }
    );
    // Extra byte at the end of the metadata section (the code section moves by one).
    let lib = Library {
        name: "t".into(),
        ..Default::default()
    };
    let mut b = write(&lib);
    let end = b.len();
    b.push(0);
    add_u32(&mut b, header::META_LEN, 1);
    add_u32(&mut b, header::CODE_OFF, 1);
    assert_eq!(
        err(&b),
        FormatError::TrailingBytes {
            offset: end,
            section: "metadata",
            count: 1
        }
    );
}

#[test]
fn error_non_canonical() {
    // Library name refers to heap entry 1 before entry 0 was used.
    let lib = Library {
        name: "a".into(),
        imports: vec![Import {
            name: "b".into(),
            line: 3,
        }],
        ..Default::default()
    };
    let mut b = write(&lib);
    let at = meta_off(&b);
    put_u32(&mut b, at, 1);
    assert!(matches!(err(&b), FormatError::NonCanonical { offset, .. } if offset == at));
    // Both refer to entry 0: entry 1 is never referenced.
    put_u32(&mut b, at, 0);
    put_u32(&mut b, at + 8, 0);
    // heap: count at 36, entry 0 = len(4) at 40 + "a" at 44, so entry 1 is at 45.
    assert!(matches!(
        err(&b),
        FormatError::NonCanonical { offset: 45, .. }
    ));
    // Duplicate heap entries.
    let mut b = write(&lib);
    assert_eq!(b[49], b'b');
    b[49] = b'a';
    assert!(matches!(
        err(&b),
        FormatError::NonCanonical { offset: 45, .. }
    ));
}

#[test]
fn error_bad_body_offset() {
    let mut b = write(&one_method(&[(Op::Ret, Operand::None)]));
    let at = code_off(&b) - 4; // the method's body offset is the last metadata field
    assert_eq!(u32_at(&b, at), 0);
    put_u32(&mut b, at, 3);
    assert!(matches!(
        err(&b),
        FormatError::BadBodyOffset { offset, found: 3, expected: 0, ref method } if offset == at && method == "T::m"
    ));
}

#[test]
fn error_bad_code() {
    let mut b = write(&one_method(&[
        (Op::Nop, Operand::None),
        (Op::Ret, Operand::None),
    ]));
    let at = code_off(&b) + 4 + 1;
    assert_eq!(b[at], Op::Ret as u8);
    b[at] = 0xff;
    assert!(matches!(
        err(&b),
        FormatError::BadCode { offset, error: crate::bytecode::DecodeError::BadOpcode { offset: 1, byte: 0xff }, .. }
            if offset == at
    ));
    // An instruction cut by the code length.
    let mut b = write(&one_method(&[
        (Op::LdcI32, Operand::I32(7)),
        (Op::Ret, Operand::None),
    ]));
    let at = code_off(&b) + 4;
    b[at + 5] = Op::LdcI64 as u8; // ret -> ldc.i64 with no operand
    assert!(matches!(err(&b), FormatError::BadCode { offset, .. } if offset == at + 5));
    // A method without code has no body record...
    let lib = one_method(&[]);
    assert_eq!(read(&write(&lib)).unwrap(), lib);
    // ...and an empty body record is not canonical: turn `ret` into nothing.
    let mut b = write(&one_method(&[(Op::Ret, Operand::None)]));
    let c = code_off(&b);
    b.remove(c + 4);
    put_u32(&mut b, c, 0);
    add_u32(&mut b, header::CODE_LEN, -1);
    assert!(matches!(err(&b), FormatError::NonCanonical { offset, .. } if offset == c));
}

#[test]
fn error_bad_operand() {
    for (op, operand, table) in [
        (Op::Ldstr, Operand::Str(0), "string literals"),
        (Op::Call, Operand::Method(0), "member references"),
        (Op::Ldfld, Operand::Field(0), "member references"),
        (Op::Newarr, Operand::Type(0), "type references"),
    ] {
        let mut lib = one_method(&[
            (Op::Nop, Operand::None),
            (op, operand),
            (Op::Ret, Operand::None),
        ]);
        lib.type_refs = vec![TypeSig::Prim(Prim::I32)];
        lib.member_refs = vec![MemberRef {
            class: "T".into(),
            name: "m".into(),
            kind: MemberKind::Method,
        }];
        let mut b = write(&lib);
        assert_eq!(read(&b).unwrap(), lib);
        let at = code_off(&b) + 4 + 2;
        put_u32(&mut b, at, 1);
        assert_eq!(
            err(&b),
            FormatError::BadOperand {
                offset: at,
                method: "T::m".into(),
                table,
                index: 1,
                len: 1
            }
        );
    }
}

#[test]
fn error_bad_handler() {
    let mut lib = one_method(&[
        (Op::LdcI32, Operand::I32(0)),
        (Op::Pop, Operand::None),
        (Op::Ret, Operand::None),
    ]);
    lib.types[0].methods[0].handlers = vec![Handler {
        try_start: 0,
        try_end: 5,
        handler_start: 5,
        handler_end: 6,
        kind: HandlerKind::Finally,
    }];
    let b = write(&lib);
    assert_eq!(read(&b).unwrap(), lib);
    let h = code_off(&b) + 4 + 7 + 4; // the handler record
    for (field, value, needle) in [
        (4, 9, "ends past the code"),
        (0, 3, "not an instruction boundary"),
        (0, 6, "reversed"),
        (12, 8, "ends past the code"),
        (8, 1, "handler start 1 is not an instruction boundary"),
    ] {
        let mut b = b.clone();
        put_u32(&mut b, h + field, value);
        match err(&b) {
            FormatError::BadHandler { offset, reason, .. } => {
                assert_eq!(offset, h);
                assert!(reason.contains(needle), "{reason}");
            }
            e => panic!("{e:?}"),
        }
    }
    let mut b2 = b.clone();
    b2[h + 16] = 2;
    assert_eq!(
        err(&b2),
        FormatError::BadTag {
            offset: h + 16,
            what: "handler kind",
            tag: 2
        }
    );
    let mut b3 = b.clone();
    put_u32(&mut b3, h + 17, 1);
    assert!(matches!(err(&b3), FormatError::NonCanonical { offset, .. } if offset == h + 17));
}

#[test]
fn error_bad_line_table() {
    let mut lib = one_method(&[
        (Op::LdcI32, Operand::I32(0)),
        (Op::Pop, Operand::None),
        (Op::Ret, Operand::None),
    ]);
    lib.types[0].methods[0].lines = vec![
        LineEntry { offset: 5, line: 2 },
        LineEntry { offset: 0, line: 1 },
    ];
    let b = write(&lib);
    let second = code_off(&b) + 4 + 7 + 4 + 4 + 8;
    match err(&b) {
        FormatError::BadLineTable { offset, reason, .. } => {
            assert_eq!(offset, second);
            assert!(reason.contains("not sorted"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    for (bad, needle) in [(2, "not an instruction start"), (7, "past the code")] {
        lib.types[0].methods[0].lines = vec![LineEntry {
            offset: bad,
            line: 1,
        }];
        match err(&write(&lib)) {
            FormatError::BadLineTable { offset, reason, .. } => {
                assert_eq!(offset, second - 8);
                assert!(reason.contains(needle), "{reason}");
            }
            e => panic!("{e:?}"),
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    let b = write(&rich());
    for n in 0..b.len() {
        assert!(read(&b[..n]).is_err(), "prefix of {n} bytes was accepted");
    }
}

/// xorshift64: a tiny deterministic PRNG for the mutation loop.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_mutations_never_panic() {
    let original = write(&rich());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for round in 0..4000 {
        let mut b = original.clone();
        let edits = 1 + rng.below(4);
        for _ in 0..edits {
            let at = rng.below(b.len());
            match rng.below(4) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = rng.next() as u8,
                2 => b[at] = 0xff,
                _ => {
                    // Overwrite a whole u32 with a boundary value.
                    let v = [0u32, 1, 0x7fff_ffff, u32::MAX, 64][rng.below(5)];
                    let at = at.min(b.len() - 4);
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        if rng.below(8) == 0 {
            let n = rng.below(b.len());
            b.truncate(n);
        }
        match read(&b) {
            // Canonical encoding: whatever is accepted is exactly what the writer produces.
            Ok(lib) => {
                accepted += 1;
                assert_eq!(
                    write(&lib),
                    b,
                    "round {round}: accepted bytes are not canonical"
                );
                let _ = inspect(&lib);
            }
            Err(e) => {
                let _ = e.to_string();
                assert!(
                    e.offset() <= b.len(),
                    "round {round}: offset {} past the end",
                    e.offset()
                );
            }
        }
    }
    // Flips of constants and line numbers are legal, so some mutations must pass.
    assert!(accepted > 0);
}

#[test]
fn inspect_shows_every_table() {
    let text = inspect(&rich());
    for needle in [
        "library geometry",
        "[1] more_ünïcode",
        "string literals (4):",
        "\"line\\n\\\"quoted\\\" 😀\"",
        "[15] string[][] (ref)",
        "[1] method Circle::area",
        "[0] field Circle::r",
        "interface public Shape",
        "extends: Runnable",
        "class public sealed Circle",
        "implements: Shape, Runnable",
        "attr Doc(\"a circle\", version = 2, min = -9223372036854775808, ratio = 1.5, negzero = -0.0, inf = -inf, yes = true, no = false, c = '✓' (U+2713), surrogate = U+D800 (not a scalar value), \"\")",
        "flags 4 (public mutable(self)) instance",
        "flags 7 (protected mutable(self)) static",
        "count: atomic i64  flags 3 (public mutable) static",
        "public R: f64 get get_r set -",
        "protected W: Circle get - set set_w",
        "public static guarded()  (line 39)",
        "handlers (2):",
        "try 0..17 catch ArithmeticException (type ref 14) handler 17..23",
        "try 0..23 finally handler 23..24",
        "lines (4): @0:40 @10:41 @10:41 @24:45",
        "protected virtual override every_op(a: i64, b: f64[]) -> Circle[]",
        "locals (bool: bool, char: char",
        "private static native clock_ns() -> i64",
        "code: none (native)",
        "attr Host()",
        "class private abstract AbstractBase",
        "parent: Circle",
        "public virtual abstract area() -> f64",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Dangling indices are shown, not panicked on.
    let mut lib = rich();
    lib.type_refs.clear();
    assert!(inspect(&lib).contains("<dangling type ref 14>"));
}
