//! Method-body generation: typed expressions (each pushes exactly one value of
//! the requested stack type) and statements (each leaves the stack empty).
//! See the module docs of `gen` for the invariants.

use super::{f32_lit, f64_lit, Dt, Rng, St};

/// A method that generated code may call.
#[derive(Clone, Debug)]
pub struct Callee {
    /// `Class::name` as written after `call` / `callvirt`.
    pub name: String,
    /// Parameter types, without `this`.
    pub params: Vec<Dt>,
    pub ret: Option<Dt>,
    /// Estimated work of one call, in statement units.
    pub cost: u64,
}

/// A field: `Class::name` and its slot type.
#[derive(Clone, Debug)]
pub struct Field {
    pub qname: String,
    pub dt: Dt,
}

/// What the program offers to the method being generated.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// Static methods callable with `call` (all generated earlier).
    pub helpers: Vec<Callee>,
    /// Mutable static fields.
    pub statics: Vec<Field>,
    /// Public mutable instance fields of `Base`.
    pub fields: Vec<Field>,
    /// Instance methods callable with `callvirt` on a `Base` receiver
    /// (`Base::vm`, `IVal::val`, `Base::tag`); empty inside instance methods.
    pub virtuals: Vec<Callee>,
    /// The parameters of the (common) constructor of Base, Mid and Leaf.
    pub ctor_params: Vec<Dt>,
}

pub const CLASSES: [&str; 3] = ["Base", "Mid", "Leaf"];
const CATCHABLE: [&str; 5] = [
    "ArithmeticException",
    "IndexOutOfRangeException",
    "InvalidCastException",
    "NullReferenceException",
    "GenError",
];

#[derive(Clone, Debug)]
struct Var {
    name: String,
    dt: Dt,
    is_arg: bool,
    writable: bool,
}

#[derive(Clone, Debug)]
struct Arr {
    name: String,
    elem: Dt,
    len: u32,
}

pub struct MethodGen<'a> {
    pub rng: &'a mut Rng,
    ctx: &'a Ctx,
    lines: Vec<String>,
    vars: Vec<Var>,
    locals: Vec<(String, String)>,
    arrays: Vec<Arr>,
    objs: Vec<String>,
    null_obj: Option<String>,
    has_this: bool,
    label: u32,
    protected: bool,
    in_finally: bool,
    loops: u32,
    mult: u64,
    pub cost: u64,
    budget: u64,
    indent: usize,
    /// Unique prefix of this method's `ldstr` markers.
    tag: String,
}

fn i32_edges() -> &'static [i64] {
    &[
        0,
        1,
        -1,
        2,
        3,
        -2,
        7,
        -7,
        8,
        31,
        32,
        33,
        63,
        64,
        65,
        100,
        127,
        128,
        255,
        256,
        -128,
        1000,
        65535,
        65536,
        0xD7FF,
        0xD800,
        0xDFFF,
        0xE000,
        0x10FFFF,
        0x110000,
        2147483647,
        -2147483648,
        2147483646,
        -2147483647,
        0x5555_5555,
        0x0F0F_0F0F,
        1 << 30,
        -(1 << 30),
    ]
}

fn i64_edges() -> &'static [&'static str] {
    &[
        "0",
        "1",
        "-1",
        "2",
        "-2",
        "7",
        "31",
        "32",
        "33",
        "63",
        "64",
        "65",
        "255",
        "256",
        "2147483647",
        "-2147483648",
        "2147483648",
        "4294967295",
        "4294967296",
        "-2147483649",
        "9007199254740992",
        "9007199254740993",
        "9223372036854775807",
        "-9223372036854775808",
        "-9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "0x5555555555555555",
        "0x00FF00FF00FF00FF",
        "1000000000000000000",
        "-1000000000000",
        "1114111",
        "55296",
    ]
}

fn f64_edges() -> &'static [f64] {
    &[
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        2.0,
        1.5,
        2.5,
        -2.5,
        0.1,
        3.25,
        1e300,
        -1e300,
        1e-300,
        5e-324,
        2.2250738585072014e-308,
        f64::MAX,
        f64::MIN,
        2147483647.0,
        2147483648.0,
        -2147483648.0,
        -2147483649.0,
        2147483647.5,
        4294967295.0,
        4294967296.0,
        9.223372036854776e18,
        -9.223372036854776e18,
        1.8446744073709552e19,
        255.0,
        255.9,
        256.0,
        -0.9,
        1e10,
        123456.789,
        1114111.0,
        55296.0,
        1e39,
        3.4028235e38,
    ]
}

fn f32_edges() -> &'static [f32] {
    &[
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -2.5,
        0.1,
        f32::MAX,
        f32::MIN,
        1e-45,
        1.1754944e-38,
        16777216.0,
        16777217.0,
        2147483648.0,
        4294967296.0,
        9.223372e18,
        1.8446744e19,
        255.5,
        256.0,
        -129.0,
        1e10,
    ]
}

const BRANCHES: [&str; 10] = [
    "beq", "bne", "blt", "ble", "bgt", "bge", "blt.un", "ble.un", "bgt.un", "bge.un",
];
const COMPARES: [&str; 10] = [
    "ceq", "cne", "clt", "cgt", "cle", "cge", "clt.un", "cgt.un", "cle.un", "cge.un",
];

impl<'a> MethodGen<'a> {
    /// A generator for one method. `params` are its (named) parameters,
    /// `has_this` makes `ldarg this` available, `protected` allows raw throwing
    /// operations at top level, `budget` bounds its cost.
    pub fn new(
        rng: &'a mut Rng,
        ctx: &'a Ctx,
        params: &[(String, Dt)],
        has_this: bool,
        protected: bool,
        budget: u64,
        tag: &str,
    ) -> MethodGen<'a> {
        let vars = params
            .iter()
            .map(|(n, d)| Var {
                name: n.clone(),
                dt: *d,
                is_arg: true,
                writable: true,
            })
            .collect();
        MethodGen {
            rng,
            ctx,
            lines: Vec::new(),
            vars,
            locals: Vec::new(),
            arrays: Vec::new(),
            objs: Vec::new(),
            null_obj: None,
            has_this,
            label: 0,
            protected,
            in_finally: false,
            loops: 0,
            mult: 1,
            cost: 0,
            budget,
            indent: 2,
            tag: tag.to_string(),
        }
    }

    pub fn emit(&mut self, s: impl AsRef<str>) {
        let pad = "  ".repeat(self.indent);
        self.lines.push(format!("{pad}{}", s.as_ref()));
    }

    fn emit_label(&mut self, l: &str) {
        let pad = "  ".repeat(self.indent.saturating_sub(1));
        self.lines.push(format!("{pad}{l}:"));
    }

    fn new_label(&mut self) -> String {
        self.label += 1;
        format!("L{}", self.label)
    }

    fn new_local(&mut self, prefix: &str, ty: &str) -> String {
        let name = format!("{prefix}{}", self.locals.len());
        self.locals.push((name.clone(), ty.to_string()));
        name
    }

    fn add_cost(&mut self, c: u64) {
        self.cost += self.mult * c;
    }

    fn can_afford(&self, c: u64) -> bool {
        self.cost + self.mult * c <= self.budget
    }

    /// Declares and initialises scalar locals, arrays and (when `objects`)
    /// object locals. Emits the initialisation code.
    pub fn setup_locals(&mut self, scalars: usize, arrays: usize, objects: usize) {
        for _ in 0..scalars {
            let dt = *self.rng.pick(&Dt::ALL);
            let name = self.new_local("v", dt.kasm());
            self.vars.push(Var {
                name: name.clone(),
                dt,
                is_arg: false,
                writable: true,
            });
            if self.rng.pct(60) {
                self.expr(dt.st(), 1);
                self.emit(format!("stloc {name}"));
            }
        }
        for _ in 0..arrays {
            let elem = *self.rng.pick(&Dt::ALL);
            let len = self.rng.range(1, 9);
            let name = self.new_local("a", &format!("{}[]", elem.kasm()));
            self.emit(format!("ldc.i32 {len}"));
            self.emit(format!("newarr {}", elem.kasm()));
            self.emit(format!("stloc {name}"));
            self.arrays.push(Arr { name, elem, len });
        }
        for _ in 0..objects {
            let name = self.new_local("o", "Base");
            self.new_object();
            self.emit(format!("stloc {name}"));
            self.objs.push(name);
        }
        if objects > 0 {
            self.null_obj = Some(self.new_local("on", "Base"));
        }
    }

    /// Pushes a new Base/Mid/Leaf (static type: that class).
    fn new_object(&mut self) {
        let params = self.ctx.ctor_params.clone();
        for p in params {
            self.expr(p.st(), 1);
        }
        let c = *self.rng.pick(&CLASSES);
        self.emit(format!("newobj {c}::ctor"));
    }

    /// Emits the final `ret` (with a value of `ret` type, if any).
    pub fn finish(&mut self, ret: Option<Dt>) {
        if let Some(dt) = ret {
            self.expr(dt.st(), 3);
        }
        self.emit("ret");
    }

    /// The body text: `.locals` then the instructions.
    pub fn body(&self) -> String {
        let mut s = String::new();
        if !self.locals.is_empty() {
            let l: Vec<String> = self
                .locals
                .iter()
                .map(|(n, t)| format!("{n}: {t}"))
                .collect();
            s.push_str(&format!("    .locals ({})\n", l.join(", ")));
        }
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    // ------------------------------------------------------------------
    // Expressions

    fn konst(&mut self, st: St) {
        match st {
            St::I32 => {
                let r = self.rng.below(10);
                let s = match r {
                    0..=5 => format!("ldc.i32 {}", self.rng.pick(i32_edges())),
                    6 => format!("ldc.i32 {}", self.rng.next_u64() as i32),
                    7 => format!("ldc.i32 {}", self.rng.below(41) as i32 - 20),
                    8 => format!("ldc.bool {}", self.rng.pct(50)),
                    _ => match self.rng.below(4) {
                        0 => "ldc.i32 0x80000000".to_string(),
                        1 => "ldc.i32 0xffffffff".to_string(),
                        2 => format!(
                            "ldc.char {}",
                            self.rng.pick(&["'a'", "'\\0'", "'\\u{1F600}'", "'é'"])
                        ),
                        _ => format!("ldc.char {}", self.rng.below(0xD800)),
                    },
                };
                self.emit(s);
            }
            St::I64 => {
                let s = match self.rng.below(10) {
                    0..=6 => format!("ldc.i64 {}", self.rng.pick(i64_edges())),
                    7 => format!("ldc.i64 {}", self.rng.next_u64() as i64),
                    _ => format!("ldc.i64 {}", self.rng.below(41) as i64 - 20),
                };
                self.emit(s);
            }
            St::F64 => {
                let v = match self.rng.below(12) {
                    0 => *self.rng.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
                    1..=6 => *self.rng.pick(f64_edges()),
                    9 => self.rng.below(1000) as f64 * 1e-3,
                    7 => f64::from_bits(self.rng.next_u64()),
                    _ => (self.rng.below(401) as f64 - 200.0) / 8.0,
                };
                self.emit(format!("ldc.f64 {}", f64_lit(v)));
            }
            St::F32 => {
                let v = match self.rng.below(12) {
                    0 => *self.rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
                    1..=6 => *self.rng.pick(f32_edges()),
                    9 => self.rng.below(1000) as f32 * 1e-3,
                    7 => f32::from_bits(self.rng.next_u64() as u32),
                    _ => (self.rng.below(401) as f32 - 200.0) / 8.0,
                };
                self.emit(format!("ldc.f32 {}", f32_lit(v)));
            }
        }
    }

    /// Pushes a receiver of static type Base (never null unless protected).
    fn receiver(&mut self) -> bool {
        if self.has_this && (self.objs.is_empty() || self.rng.pct(50)) {
            self.emit("ldarg this");
            return true;
        }
        if self.objs.is_empty() {
            return false;
        }
        if self.protected && self.rng.pct(8) {
            if let Some(n) = self.null_obj.clone() {
                self.emit(format!("ldloc {n}"));
                return true;
            }
        }
        let o = self.rng.pick(&self.objs).clone();
        self.emit(format!("ldloc {o}"));
        true
    }

    fn leaf(&mut self, st: St) {
        loop {
            match self.rng.weighted(&[4, 5, 1, 2, 2, 1]) {
                0 => return self.konst(st),
                1 => {
                    let c: Vec<Var> = self
                        .vars
                        .iter()
                        .filter(|v| v.dt.st() == st)
                        .cloned()
                        .collect();
                    if c.is_empty() {
                        continue;
                    }
                    let v = self.rng.pick(&c).clone();
                    let op = if v.is_arg { "ldarg" } else { "ldloc" };
                    self.emit(format!("{op} {}", v.name));
                    return;
                }
                2 => {
                    let c: Vec<Field> = self
                        .ctx
                        .statics
                        .iter()
                        .filter(|f| f.dt.st() == st)
                        .cloned()
                        .collect();
                    if c.is_empty() {
                        continue;
                    }
                    let f = self.rng.pick(&c).clone();
                    self.emit(format!("ldsfld {}", f.qname));
                    return;
                }
                3 => {
                    let c: Vec<Field> = self
                        .ctx
                        .fields
                        .iter()
                        .filter(|f| f.dt.st() == st)
                        .cloned()
                        .collect();
                    if c.is_empty() || (!self.has_this && self.objs.is_empty()) {
                        continue;
                    }
                    let f = self.rng.pick(&c).clone();
                    self.receiver();
                    self.emit(format!("ldfld {}", f.qname));
                    return;
                }
                4 => {
                    let c: Vec<Arr> = self
                        .arrays
                        .iter()
                        .filter(|a| a.elem.st() == st)
                        .cloned()
                        .collect();
                    if c.is_empty() {
                        continue;
                    }
                    let a = self.rng.pick(&c).clone();
                    self.emit(format!("ldloc {}", a.name));
                    self.index(a.len);
                    self.emit(format!("ldelem {}", a.elem.kasm()));
                    return;
                }
                _ => {
                    if st != St::I32 || self.arrays.is_empty() {
                        continue;
                    }
                    let a = self.rng.pick(&self.arrays).name.clone();
                    self.emit(format!("ldloc {a}"));
                    self.emit("ldlen");
                    return;
                }
            }
        }
    }

    /// Pushes an i32 index for an array of length `len`: in range unless
    /// protected.
    fn index(&mut self, len: u32) {
        if self.protected && self.rng.pct(25) {
            if self.rng.pct(50) {
                let bad = [-1i64, len as i64, len as i64 + 1, -2147483648, 2147483647];
                self.emit(format!("ldc.i32 {}", self.rng.pick(&bad)));
            } else {
                self.expr(St::I32, 1);
            }
            return;
        }
        if self.rng.pct(50) {
            self.emit(format!("ldc.i32 {}", self.rng.below(len as usize)));
        } else {
            self.expr(St::I32, 1);
            if len.is_power_of_two() && self.rng.pct(50) {
                self.emit(format!("ldc.i32 {}", len - 1));
                self.emit("and");
            } else {
                self.emit(format!("ldc.i32 {len}"));
                self.emit("rem.un");
            }
        }
    }

    /// Pushes one value of stack type `st`.
    pub fn expr(&mut self, st: St, d: u32) {
        if d == 0 {
            return self.leaf(st);
        }
        loop {
            // leaf unary binary compare conv cond call native dup
            let w = [3, 2, 7, if st == St::I32 { 3 } else { 0 }, 3, 1, 2, 1, 1];
            match self.rng.weighted(&w) {
                0 => return self.leaf(st),
                1 => {
                    self.expr(st, d - 1);
                    if st.is_int() && self.rng.pct(50) {
                        self.emit("not");
                    } else {
                        self.emit("neg");
                    }
                    return;
                }
                2 => return self.binary(st, d),
                3 => {
                    let s2 = *self.rng.pick(&St::ALL);
                    self.expr(s2, d - 1);
                    self.expr(s2, d - 1);
                    let op = *self.rng.pick(&COMPARES);
                    self.emit(op);
                    return;
                }
                4 => return self.conv(st, d),
                5 => {
                    let l_else = self.new_label();
                    let l_end = self.new_label();
                    self.branch_if(&l_else, d - 1);
                    self.expr(st, d - 1);
                    self.emit(format!("br {l_end}"));
                    self.emit_label(&l_else);
                    self.expr(st, d - 1);
                    self.emit_label(&l_end);
                    return;
                }
                6 => {
                    if self.call_expr(st, d) {
                        return;
                    }
                }
                7 => {
                    if self.native(st, d) {
                        return;
                    }
                }
                _ => {
                    self.expr(st, d - 1);
                    self.emit("dup");
                    let ops: &[&str] = if st.is_int() {
                        &["add", "sub", "mul", "xor", "and", "or"]
                    } else {
                        &["add", "sub", "mul", "div", "rem"]
                    };
                    self.emit(*self.rng.pick(ops));
                    return;
                }
            }
        }
    }

    fn binary(&mut self, st: St, d: u32) {
        if !st.is_int() {
            self.expr(st, d - 1);
            self.expr(st, d - 1);
            let op = *self.rng.pick(&["add", "sub", "mul", "div", "rem"]);
            self.emit(op);
            return;
        }
        match self.rng.weighted(&[6, 4, 4, 4]) {
            0 => {
                self.expr(st, d - 1);
                self.expr(st, d - 1);
                let op = *self.rng.pick(&["add", "sub", "mul", "and", "or", "xor"]);
                self.emit(op);
            }
            1 => {
                self.expr(st, d - 1);
                self.shift_amount(st, d - 1);
                let op = *self.rng.pick(&["shl", "shr", "shr.un"]);
                self.emit(op);
            }
            2 => {
                // signed div / rem
                if self.protected && self.rng.pct(20) {
                    self.emit(if st == St::I32 {
                        "ldc.i32 -2147483648"
                    } else {
                        "ldc.i64 -9223372036854775808"
                    });
                } else {
                    self.expr(st, d - 1);
                }
                self.divisor(st, true, d - 1);
                self.emit(*self.rng.pick(&["div", "rem"]));
            }
            _ => {
                self.expr(st, d - 1);
                self.divisor(st, false, d - 1);
                self.emit(*self.rng.pick(&["div.un", "rem.un"]));
            }
        }
    }

    fn int_const(&mut self, st: St, v: i64) {
        match st {
            St::I32 => self.emit(format!("ldc.i32 {}", v as i32)),
            _ => self.emit(format!("ldc.i64 {v}")),
        }
    }

    /// Pushes a divisor. Unless protected it is never 0, and for signed
    /// division never -1 (so `MIN / -1` cannot happen either).
    fn divisor(&mut self, st: St, signed: bool, d: u32) {
        if self.protected && self.rng.pct(40) {
            if self.rng.pct(50) {
                let v = *self.rng.pick(&[0i64, 0, -1, -1, 1, 2, -2]);
                self.int_const(st, v);
            } else {
                self.expr(st, d);
            }
            return;
        }
        if self.rng.pct(45) {
            let mut v = *self.rng.pick(&[
                1i64,
                2,
                3,
                7,
                -2,
                -7,
                10,
                1000,
                -1,
                2147483647,
                -2147483648,
                65536,
            ]);
            if signed && v == -1 {
                v = -3;
            }
            self.int_const(st, v);
        } else {
            self.expr(st, d);
            if signed {
                self.int_const(st, -2);
                self.emit("and");
                self.int_const(st, 2);
                self.emit("or");
            } else {
                self.int_const(st, 1);
                self.emit("or");
            }
        }
    }

    fn shift_amount(&mut self, st: St, d: u32) {
        let amt_st = if st == St::I64 && self.rng.pct(30) {
            St::I64
        } else {
            St::I32
        };
        if self.rng.pct(60) {
            let v = *self.rng.pick(&[
                0i64,
                1,
                5,
                8,
                31,
                32,
                33,
                63,
                64,
                65,
                -1,
                -32,
                127,
                1000,
                -2147483648,
            ]);
            self.int_const(amt_st, v);
        } else {
            self.expr(amt_st, d);
        }
    }

    fn conv(&mut self, st: St, d: u32) {
        let src = *self.rng.pick(&St::ALL);
        match st {
            St::I32 => {
                let op =
                    *self
                        .rng
                        .pick(&["conv.i32", "conv.i32", "conv.u8", "conv.bool", "conv.char"]);
                if op == "conv.char" {
                    return self.valid_char(d);
                }
                self.expr(src, d - 1);
                self.emit(op);
            }
            St::I64 => {
                self.expr(src, d - 1);
                self.emit(*self.rng.pick(&["conv.i64", "conv.u64"]));
            }
            St::F32 | St::F64 => {
                let un = src.is_int() && self.rng.pct(40);
                self.expr(src, d - 1);
                let op = match (st, un) {
                    (St::F32, false) => "conv.f32",
                    (St::F32, true) => "conv.f32.un",
                    (_, false) => "conv.f64",
                    (_, true) => "conv.f64.un",
                };
                self.emit(op);
            }
        }
    }

    /// Pushes the result of a `conv.char`: of a guaranteed scalar value
    /// unless protected (then of anything).
    fn valid_char(&mut self, d: u32) {
        if self.protected && self.rng.pct(50) {
            let src = *self
                .rng
                .pick(&[St::I32, St::I32, St::I64, St::I64, St::F64]);
            self.expr(src, d.saturating_sub(1));
        } else {
            self.expr(St::I32, d.saturating_sub(1));
            if self.rng.pct(50) {
                self.emit("ldc.i32 0xD7FF");
                self.emit("and");
            } else {
                self.emit("ldc.i32 0xFFFFF");
                self.emit("and");
                self.emit("ldc.i32 0x10000");
                self.emit("add");
            }
        }
        self.emit("conv.char");
    }

    /// Emits a call of static `callee` with random arguments and prints (or
    /// pops) its result.
    pub fn call_and_print(&mut self, callee: &Callee, d: u32) {
        self.add_cost(callee.cost);
        self.call_args(&callee.params, d);
        self.emit(format!("call {}", callee.name));
        if let Some(r) = callee.ret {
            self.emit(format!("call {}", r.printer()));
        }
    }

    fn call_args(&mut self, params: &[Dt], d: u32) {
        for p in params {
            self.expr(p.st(), d.min(2));
        }
    }

    /// A call pushing a value of type `st`; false if none is available.
    fn call_expr(&mut self, st: St, d: u32) -> bool {
        let use_virtual =
            !self.ctx.virtuals.is_empty() && !self.objs.is_empty() && self.rng.pct(40);
        let pool = if use_virtual {
            &self.ctx.virtuals
        } else {
            &self.ctx.helpers
        };
        let c: Vec<Callee> = pool
            .iter()
            .filter(|c| c.ret.map(|r| r.st()) == Some(st) && self.can_afford(c.cost))
            .cloned()
            .collect();
        if c.is_empty() {
            return false;
        }
        let callee = self.rng.pick(&c).clone();
        self.add_cost(callee.cost);
        if use_virtual {
            self.receiver();
            self.call_args(&callee.params, d - 1);
            self.emit(format!("callvirt {}", callee.name));
        } else {
            self.call_args(&callee.params, d - 1);
            self.emit(format!("call {}", callee.name));
        }
        true
    }

    fn native(&mut self, st: St, d: u32) -> bool {
        match st {
            St::I32 => match self.rng.below(4) {
                0 => {
                    self.expr(St::I64, d - 1);
                    self.emit("call Std::str_i64");
                    self.emit("call Std::len");
                }
                1 => {
                    self.expr(St::F64, d - 1);
                    self.emit(format!("ldc.i32 {}", self.rng.pick(&[0, 3, 17])));
                    self.emit("call Std::str_f64");
                    self.emit("call Std::hash");
                }
                2 => {
                    self.expr(St::I64, d - 1);
                    self.emit("call Std::str_u64");
                    self.emit("ldc.i32 0");
                    self.emit("call Std::byte_at");
                }
                _ => {
                    self.expr(St::I64, d - 1);
                    self.emit("call Std::str_i64");
                    self.expr(St::I64, d - 1);
                    self.emit("call Std::str_i64");
                    self.emit("call Std::str_eq");
                }
            },
            // Math natives, most of them computed inline by compiled code
            // (`ir::Intrinsic`): the modes must agree bit for bit.
            St::F64 => match self.rng.below(3) {
                0 => {
                    self.expr(St::F64, d - 1);
                    self.emit("call Std::sqrt");
                }
                1 => {
                    self.expr(St::F64, d - 1);
                    let f = *self
                        .rng
                        .pick(&["floor", "ceil", "trunc", "round", "abs", "cbrt"]);
                    self.emit(format!("call Std::{f}"));
                }
                _ => {
                    self.expr(St::F64, d - 1);
                    self.expr(St::F64, d - 1);
                    let f = *self.rng.pick(&["copysign", "min", "max", "hypot"]);
                    self.emit(format!("call Std::{f}"));
                }
            },
            _ => return false,
        }
        true
    }

    /// Emits code that jumps to `target` on some random condition (stack
    /// unchanged on both paths).
    fn branch_if(&mut self, target: &str, d: u32) {
        match self
            .rng
            .weighted(&[3, 5, if self.objs.is_empty() { 0 } else { 1 }])
        {
            0 => {
                let st = if self.rng.pct(70) { St::I32 } else { St::I64 };
                self.expr(st, d);
                let op = if self.rng.pct(50) {
                    "brtrue"
                } else {
                    "brfalse"
                };
                self.emit(format!("{op} {target}"));
            }
            1 => {
                let st = *self.rng.pick(&St::ALL);
                self.expr(st, d);
                self.expr(st, d);
                let op = *self.rng.pick(&BRANCHES);
                self.emit(format!("{op} {target}"));
            }
            _ => {
                let o = self.rng.pick(&self.objs).clone();
                self.emit(format!("ldloc {o}"));
                if self.rng.pct(50) {
                    let c = *self.rng.pick(&CLASSES);
                    self.emit(format!("isinst {c}"));
                    let op = if self.rng.pct(50) {
                        "brtrue"
                    } else {
                        "brfalse"
                    };
                    self.emit(format!("{op} {target}"));
                } else {
                    let o2 = self.rng.pick(&self.objs).clone();
                    self.emit(format!("ldloc {o2}"));
                    let op = if self.rng.pct(50) { "beq" } else { "bne" };
                    self.emit(format!("{op} {target}"));
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // Statements

    /// Prints a value of slot type `dt` (already on the stack).
    fn print_top(&mut self, dt: Dt) {
        match dt {
            Dt::I64 if self.rng.pct(30) => {
                self.emit("call Std::str_i64");
                self.emit("call Std::println");
            }
            Dt::F64 if self.rng.pct(25) => {
                self.emit(format!("ldc.i32 {}", self.rng.pick(&[0, 1, 6, 17, 30])));
                self.emit("call Std::str_f64");
                self.emit("call Std::println");
            }
            Dt::I32 if self.rng.pct(20) => {
                self.emit("conv.i64");
                self.emit("call Std::str_i64");
                self.emit("call Std::println");
            }
            _ => self.emit(format!("call {}", dt.printer())),
        }
    }

    fn marker(&mut self, what: &str) {
        let t = format!("{}.{what}{}", self.tag, self.label);
        self.emit(format!("ldstr \"{t}\""));
        self.emit("call Std::println");
    }

    pub fn stmts(&mut self, n: usize, depth: u32) {
        for _ in 0..n {
            if self.cost >= self.budget {
                return;
            }
            self.stmt(depth);
        }
    }

    pub fn stmt(&mut self, depth: u32) {
        self.add_cost(1);
        let d = self.rng.range(1, 3);
        let nested = depth > 0;
        let w = [
            6,                          // assign
            7,                          // print
            3,                          // store field/static/elem
            if nested { 3 } else { 0 }, // if
            if nested && self.loops < 2 && self.mult < 40 {
                2
            } else {
                0
            }, // loop
            if nested { 1 } else { 0 }, // switch
            if nested && !self.in_finally { 2 } else { 0 }, // try
            2,                          // call
            1,                          // atomic
            if self.objs.is_empty() { 0 } else { 2 }, // objects
            if self.protected && !self.in_finally {
                1
            } else {
                0
            }, // throw
            1,                          // misc
            if self.can_afford(40) { 2 } else { 0 }, // allocation-heavy
        ];
        match self.rng.weighted(&w) {
            0 => self.assign(d),
            1 => self.print_stmt(d),
            2 => self.store(d),
            3 => self.if_stmt(depth),
            4 => self.loop_stmt(depth),
            5 => self.switch_stmt(depth),
            6 => self.try_stmt(depth),
            7 => self.call_stmt(d),
            8 => self.atomic_stmt(),
            9 => self.object_stmt(),
            10 => self.throw_stmt(),
            11 => self.misc_stmt(),
            _ => self.alloc_stmt(),
        }
    }

    fn assign(&mut self, d: u32) {
        let c: Vec<Var> = self.vars.iter().filter(|v| v.writable).cloned().collect();
        if c.is_empty() {
            return self.print_stmt(d);
        }
        let v = self.rng.pick(&c).clone();
        self.expr(v.dt.st(), d);
        let op = if v.is_arg { "starg" } else { "stloc" };
        self.emit(format!("{op} {}", v.name));
        if self.rng.pct(30) {
            let op = if v.is_arg { "ldarg" } else { "ldloc" };
            self.emit(format!("{op} {}", v.name));
            self.emit(format!("call {}", v.dt.printer()));
        }
    }

    fn print_stmt(&mut self, d: u32) {
        if self.rng.pct(8) {
            self.valid_char(d);
            self.emit("call P::c");
            return;
        }
        if self.rng.pct(30) {
            // print a variable
            if !self.vars.is_empty() {
                let v = self.rng.pick(&self.vars).clone();
                let op = if v.is_arg { "ldarg" } else { "ldloc" };
                self.emit(format!("{op} {}", v.name));
                self.emit(format!("call {}", v.dt.printer()));
                return;
            }
        }
        let dt = *self.rng.pick(&Dt::ALL);
        self.expr(dt.st(), d);
        self.print_top(dt);
    }

    fn store(&mut self, d: u32) {
        match self.rng.below(3) {
            0 if !self.ctx.statics.is_empty() => {
                let f = self.rng.pick(&self.ctx.statics).clone();
                self.expr(f.dt.st(), d);
                self.emit(format!("stsfld {}", f.qname));
                if self.rng.pct(30) {
                    self.emit(format!("ldsfld {}", f.qname));
                    self.emit(format!("call {}", f.dt.printer()));
                }
            }
            1 if !self.ctx.fields.is_empty() && (self.has_this || !self.objs.is_empty()) => {
                let f = self.rng.pick(&self.ctx.fields).clone();
                self.receiver();
                self.expr(f.dt.st(), d);
                self.emit(format!("stfld {}", f.qname));
                if self.rng.pct(30) {
                    self.receiver();
                    self.emit(format!("ldfld {}", f.qname));
                    self.emit(format!("call {}", f.dt.printer()));
                }
            }
            _ if !self.arrays.is_empty() => {
                let a = self.rng.pick(&self.arrays).clone();
                self.emit(format!("ldloc {}", a.name));
                self.index(a.len);
                self.expr(a.elem.st(), d);
                self.emit(format!("stelem {}", a.elem.kasm()));
                if self.rng.pct(40) {
                    self.emit(format!("ldloc {}", a.name));
                    self.index(a.len);
                    self.emit(format!("ldelem {}", a.elem.kasm()));
                    self.emit(format!("call {}", a.elem.printer()));
                }
            }
            _ => self.print_stmt(d),
        }
    }

    fn block(&mut self, depth: u32) {
        let n = self.rng.range(0, 3) as usize;
        self.stmts(n, depth);
    }

    fn if_stmt(&mut self, depth: u32) {
        let l_else = self.new_label();
        let l_end = self.new_label();
        let has_else = self.rng.pct(60);
        self.branch_if(
            if has_else { &l_else } else { &l_end },
            self.rng.range(1, 2),
        );
        self.block(depth - 1);
        if has_else {
            self.emit(format!("br {l_end}"));
            self.emit_label(&l_else);
            self.block(depth - 1);
        }
        self.emit_label(&l_end);
    }

    fn loop_stmt(&mut self, depth: u32) {
        let n = self.rng.range(1, 6) as u64;
        let i = self.new_local("i", "i32");
        self.vars.push(Var {
            name: i.clone(),
            dt: Dt::I32,
            is_arg: false,
            writable: false,
        });
        let head = self.new_label();
        let end = self.new_label();
        let form = self.rng.below(3);
        self.loops += 1;
        let old_mult = self.mult;
        self.mult *= n;
        match form {
            0 => {
                self.emit("ldc.i32 0");
                self.emit(format!("stloc {i}"));
                self.emit_label(&head);
                self.stmts(self.rng.range(1, 3) as usize, depth - 1);
                self.emit(format!("ldloc {i}"));
                self.emit("ldc.i32 1");
                self.emit("add");
                self.emit(format!("stloc {i}"));
                self.emit(format!("ldloc {i}"));
                self.emit(format!("ldc.i32 {n}"));
                if self.rng.pct(50) {
                    self.emit(format!("blt {head}"));
                } else {
                    self.emit("clt");
                    self.emit(format!("brtrue {head}"));
                }
            }
            1 => {
                self.emit(format!("ldc.i32 {n}"));
                self.emit(format!("stloc {i}"));
                self.emit_label(&head);
                self.stmts(self.rng.range(1, 3) as usize, depth - 1);
                self.emit(format!("ldloc {i}"));
                self.emit("ldc.i32 1");
                self.emit("sub");
                self.emit("dup");
                self.emit(format!("stloc {i}"));
                self.emit(format!("brtrue {head}"));
            }
            _ => {
                self.emit("ldc.i32 0");
                self.emit(format!("stloc {i}"));
                self.emit_label(&head);
                self.emit(format!("ldloc {i}"));
                self.emit(format!("ldc.i32 {n}"));
                self.emit(format!("{} {end}", self.rng.pick(&["bge", "bge.un"])));
                self.stmts(self.rng.range(1, 3) as usize, depth - 1);
                self.emit(format!("ldloc {i}"));
                self.emit("ldc.i32 1");
                self.emit("add");
                self.emit(format!("stloc {i}"));
                self.emit(format!("br {head}"));
            }
        }
        self.emit_label(&end);
        self.mult = old_mult;
        self.loops -= 1;
    }

    fn switch_stmt(&mut self, depth: u32) {
        let k = self.rng.range(1, 5);
        self.expr(St::I32, self.rng.range(1, 2));
        match self.rng.below(3) {
            0 => {
                self.emit(format!("ldc.i32 {}", k + 1));
                self.emit("rem.un");
            }
            1 => {
                self.emit("ldc.i32 3");
                self.emit("and");
            }
            _ => {}
        }
        let cases: Vec<String> = (0..k).map(|_| self.new_label()).collect();
        let end = self.new_label();
        self.emit(format!("switch ({})", cases.join(", ")));
        self.marker("default");
        self.block(depth - 1);
        self.emit(format!("br {end}"));
        for (j, c) in cases.iter().enumerate() {
            self.emit_label(c);
            self.marker(&format!("case{j}_"));
            self.block(depth - 1);
            if self.rng.pct(70) {
                self.emit(format!("br {end}"));
            }
        }
        self.emit_label(&end);
    }

    fn try_stmt(&mut self, depth: u32) {
        let after = self.new_label();
        let outer = self.protected;
        // A try/finally without catch only where an outer handler protects.
        let catch_all = !outer || self.rng.pct(60);
        let mut clauses: Vec<&str> = CATCHABLE
            .iter()
            .copied()
            .filter(|_| self.rng.pct(30))
            .collect();
        if catch_all {
            clauses.push("Exception");
        }
        let has_finally = clauses.is_empty() || self.rng.pct(25);
        self.emit(".try {");
        self.indent += 1;
        self.protected = true;
        self.stmts(self.rng.range(1, 4) as usize, depth - 1);
        self.protected = outer;
        self.emit(format!("leave {after}"));
        self.indent -= 1;
        for c in clauses {
            self.emit(format!("}} catch {c} {{"));
            self.indent += 1;
            match self.rng.below(4) {
                0 => self.emit("pop"),
                1 if c == "GenError" => {
                    self.emit("ldfld GenError::code");
                    self.emit("call P::l");
                }
                1 | 2 => {
                    self.emit(format!("ldfld {c}::message"));
                    self.emit("call Std::println");
                }
                _ => {
                    let e = self.new_local("e", c);
                    self.emit(format!("stloc {e}"));
                    self.emit(format!("ldloc {e}"));
                    self.emit("ldfld Exception::message");
                    self.emit("call Std::println");
                }
            }
            self.marker(&format!("catch_{c}_"));
            if self.rng.pct(30) {
                self.stmt(0);
            }
            if outer && self.rng.pct(25) {
                self.emit("rethrow");
            } else {
                self.emit(format!("leave {after}"));
            }
            self.indent -= 1;
        }
        if has_finally {
            self.emit("} finally {");
            self.indent += 1;
            let (p, f) = (self.protected, self.in_finally);
            self.protected = false;
            self.in_finally = true;
            self.marker("finally");
            if self.rng.pct(50) {
                self.stmt(0);
            }
            self.protected = p;
            self.in_finally = f;
            self.emit("endfinally");
            self.indent -= 1;
        }
        self.emit("}");
        self.emit_label(&after);
    }

    fn call_stmt(&mut self, d: u32) {
        let c: Vec<Callee> = self
            .ctx
            .helpers
            .iter()
            .filter(|c| self.can_afford(c.cost))
            .cloned()
            .collect();
        if c.is_empty() {
            return self.print_stmt(d);
        }
        let callee = self.rng.pick(&c).clone();
        self.add_cost(callee.cost);
        self.call_args(&callee.params, d);
        self.emit(format!("call {}", callee.name));
        if let Some(r) = callee.ret {
            if self.rng.pct(70) {
                self.emit(format!("call {}", r.printer()));
            } else {
                self.emit("pop");
            }
        }
    }

    fn atomic_stmt(&mut self) {
        match self.rng.below(7) {
            0 => {
                self.expr(St::I64, 1);
                self.emit("atomic.add G::acnt");
                self.emit("call P::l");
            }
            1 => {
                self.emit("atomic.load G::acnt");
                self.emit("call P::l");
            }
            2 => {
                self.expr(St::I64, 1);
                self.emit("atomic.store G::acnt");
            }
            3 => {
                if self.rng.pct(50) {
                    self.emit("atomic.load G::acnt");
                } else {
                    self.expr(St::I64, 1);
                }
                self.expr(St::I64, 1);
                self.emit("atomic.cas G::acnt");
                self.emit("call P::l");
            }
            4 => {
                self.expr(St::I64, 1);
                self.emit("atomic.add G::au");
                self.emit("call P::u");
            }
            5 => {
                self.expr(St::I32, 1);
                self.expr(St::I32, 1);
                self.emit("atomic.cas G::ab");
                self.emit("call P::b");
            }
            _ => {
                if self.receiver() {
                    self.expr(St::I32, 1);
                    self.emit("atomic.add Base::af");
                    self.emit("call P::i");
                }
            }
        }
    }

    fn object_stmt(&mut self) {
        let o = self.rng.pick(&self.objs).clone();
        match self.rng.below(7) {
            0 => {
                self.new_object();
                self.emit(format!("stloc {o}"));
            }
            1 => {
                let c = *self.rng.pick(&CLASSES);
                let skip = self.new_label();
                self.emit(format!("ldloc {o}"));
                self.emit(format!("isinst {c}"));
                self.emit(format!("brfalse {skip}"));
                self.emit(format!("ldloc {o}"));
                self.emit(format!("castclass {c}"));
                self.emit(format!("callvirt {c}::tag"));
                self.emit("call P::i");
                self.emit_label(&skip);
            }
            2 if self.protected => {
                let c = *self.rng.pick(&CLASSES);
                self.emit(format!("ldloc {o}"));
                self.emit(format!("castclass {c}"));
                self.emit("callvirt Base::tag");
                self.emit("call P::i");
            }
            3 => {
                let o2 = self.rng.pick(&self.objs).clone();
                self.emit(format!("ldloc {o}"));
                self.emit(format!("ldloc {o2}"));
                self.emit(*self.rng.pick(&["ceq", "cne"]));
                self.emit("call P::i");
            }
            _ => {
                let c: Vec<Callee> = self
                    .ctx
                    .virtuals
                    .iter()
                    .filter(|c| self.can_afford(c.cost))
                    .cloned()
                    .collect();
                if c.is_empty() {
                    return;
                }
                let callee = self.rng.pick(&c).clone();
                self.add_cost(callee.cost);
                self.receiver();
                self.call_args(&callee.params, 2);
                self.emit(format!("callvirt {}", callee.name));
                if let Some(r) = callee.ret {
                    self.emit(format!("call {}", r.printer()));
                }
            }
        }
    }

    fn throw_stmt(&mut self) {
        let skip = self.new_label();
        self.branch_if(&skip, 1);
        if self.rng.pct(70) {
            self.emit(format!("ldstr \"{}.gen{}\"", self.tag, self.label));
            self.expr(St::I64, 1);
            self.emit("newobj GenError::ctor");
        } else {
            let c = *self.rng.pick(&CATCHABLE[..4]);
            self.emit(format!("ldstr \"{}.{c}{}\"", self.tag, self.label));
            self.emit(format!("newobj {c}::ctor"));
        }
        self.emit("throw");
        self.emit_label(&skip);
    }

    fn misc_stmt(&mut self) {
        match self.rng.below(4) {
            0 => self.emit("nop"),
            1 => {
                let st = *self.rng.pick(&St::ALL);
                self.expr(st, 1);
                self.emit("pop");
            }
            2 if self.protected => {
                // negative or zero lengths
                self.expr(St::I32, 1);
                self.emit("ldc.i32 8");
                self.emit("rem");
                let t = *self.rng.pick(&Dt::ALL);
                self.emit(format!("newarr {}", t.kasm()));
                self.emit("ldlen");
                self.emit("call P::i");
            }
            _ => {
                self.emit("ldnull");
                self.emit("ldnull");
                self.emit("ceq");
                self.emit("call P::b");
            }
        }
    }

    /// A counted loop `for i in 0..n` around `body` (which may use `i`);
    /// `i` is a fresh local.
    fn counted(&mut self, n: u32, body: impl FnOnce(&mut Self, &str)) {
        let i = self.new_local("i", "i32");
        let head = self.new_label();
        self.emit("ldc.i32 0");
        self.emit(format!("stloc {i}"));
        self.emit_label(&head);
        body(self, &i);
        self.emit(format!("ldloc {i}"));
        self.emit("ldc.i32 1");
        self.emit("add");
        self.emit(format!("stloc {i}"));
        self.emit(format!("ldloc {i}"));
        self.emit(format!("ldc.i32 {n}"));
        self.emit(format!("blt {head}"));
    }

    /// Allocation-heavy statements (GC stress): arrays of objects filled in a
    /// loop and read back through virtual calls, churn of short-lived arrays
    /// with every seventh kept alive, arrays of arrays, and string building.
    /// Everything allocated is reachable only from locals and the stack.
    fn alloc_stmt(&mut self) {
        // Objects only where the context has the classes (as object_stmt).
        match self.rng.below(4) {
            0 if !self.objs.is_empty() => {
                let n = self.rng.range(1, 12);
                self.add_cost(u64::from(n) * 4);
                let ra = self.new_local("ra", "Base[]");
                let s = self.new_local("s", "i32");
                self.emit(format!("ldc.i32 {n}"));
                self.emit("newarr Base");
                self.emit(format!("stloc {ra}"));
                let old = self.mult;
                self.mult *= u64::from(n);
                self.counted(n, |g, i| {
                    g.emit(format!("ldloc {ra}"));
                    g.emit(format!("ldloc {i}"));
                    g.new_object();
                    g.emit("stelem Base");
                });
                self.mult = old;
                self.emit("ldc.i32 0");
                self.emit(format!("stloc {s}"));
                self.counted(n, |g, i| {
                    g.emit(format!("ldloc {s}"));
                    g.emit(format!("ldloc {ra}"));
                    g.emit(format!("ldloc {i}"));
                    g.emit("ldelem Base");
                    g.emit("callvirt Base::tag");
                    g.emit(format!("ldloc {i}"));
                    g.emit("mul");
                    g.emit("add");
                    g.emit(format!("stloc {s}"));
                });
                self.emit(format!("ldloc {s}"));
                self.emit("call P::i");
            }
            0 | 1 => {
                let n = self.rng.range(10, 200);
                self.add_cost(u64::from(n) / 4);
                let acc = self.new_local("acc", "i64");
                let keep = self.new_local("keep", "i64[]");
                let t = self.new_local("t", "i64[]");
                let mask = *self.rng.pick(&[3, 31, 255]);
                self.emit("ldc.i64 0");
                self.emit(format!("stloc {acc}"));
                self.counted(n, |g, i| {
                    let skip = g.new_label();
                    g.emit(format!("ldloc {i}"));
                    g.emit(format!("ldc.i32 {mask}"));
                    g.emit("and");
                    g.emit("ldc.i32 1");
                    g.emit("add");
                    g.emit("newarr i64");
                    g.emit(format!("stloc {t}"));
                    g.emit(format!("ldloc {t}"));
                    g.emit("ldc.i32 0");
                    g.emit(format!("ldloc {i}"));
                    g.emit("conv.i64");
                    g.emit("stelem i64");
                    g.emit(format!("ldloc {i}"));
                    g.emit("ldc.i32 7");
                    g.emit("rem");
                    g.emit(format!("brtrue {skip}"));
                    g.emit(format!("ldloc {t}"));
                    g.emit(format!("stloc {keep}"));
                    g.emit_label(&skip);
                    g.emit(format!("ldloc {acc}"));
                    g.emit(format!("ldloc {t}"));
                    g.emit("ldlen");
                    g.emit("conv.i64");
                    g.emit("add");
                    g.emit(format!("ldloc {keep}"));
                    g.emit("ldc.i32 0");
                    g.emit("ldelem i64");
                    g.emit("mul");
                    g.emit(format!("stloc {acc}"));
                });
                self.emit(format!("ldloc {acc}"));
                self.emit("call P::l");
            }
            2 => {
                let (n, m) = (self.rng.range(1, 8), self.rng.range(1, 8));
                self.add_cost(u64::from(n * m));
                let aa = self.new_local("aa", "f64[][]");
                let sum = self.new_local("sum", "f64");
                self.emit(format!("ldc.i32 {n}"));
                self.emit("newarr f64[]");
                self.emit(format!("stloc {aa}"));
                self.counted(n, |g, i| {
                    g.emit(format!("ldloc {aa}"));
                    g.emit(format!("ldloc {i}"));
                    g.emit(format!("ldc.i32 {m}"));
                    g.emit("newarr f64");
                    g.emit("stelem f64[]");
                    g.emit(format!("ldloc {aa}"));
                    g.emit(format!("ldloc {i}"));
                    g.emit("ldelem f64[]");
                    g.emit(format!("ldloc {i}"));
                    g.emit(format!("ldc.i32 {m}"));
                    g.emit("rem");
                    g.emit(format!("ldloc {i}"));
                    g.emit("conv.f64");
                    g.emit("ldc.f64 0.5");
                    g.emit("mul");
                    g.emit("stelem f64");
                });
                self.emit("ldc.f64 0.0");
                self.emit(format!("stloc {sum}"));
                self.counted(n, |g, i| {
                    g.emit(format!("ldloc {sum}"));
                    g.emit(format!("ldloc {aa}"));
                    g.emit(format!("ldloc {i}"));
                    g.emit("ldelem f64[]");
                    g.emit(format!("ldloc {i}"));
                    g.emit(format!("ldc.i32 {m}"));
                    g.emit("rem");
                    g.emit("ldelem f64");
                    g.emit("add");
                    g.emit(format!("stloc {sum}"));
                });
                self.emit(format!("ldloc {sum}"));
                self.emit("call P::d");
            }
            _ => {
                let n = self.rng.range(2, 40);
                self.add_cost(u64::from(n) / 2);
                let st = self.new_local("str", "string");
                self.emit("ldstr \"\"");
                self.emit(format!("stloc {st}"));
                self.counted(n, |g, i| {
                    let ok = g.new_label();
                    g.emit(format!("ldloc {st}"));
                    g.emit(format!("ldloc {i}"));
                    g.emit("conv.i64");
                    g.emit("call Std::str_i64");
                    g.emit("call Std::concat");
                    g.emit(format!("stloc {st}"));
                    g.emit(format!("ldloc {st}"));
                    g.emit("call Std::len");
                    g.emit("ldc.i32 24");
                    g.emit(format!("ble {ok}"));
                    g.emit(format!("ldloc {i}"));
                    g.emit("conv.i64");
                    g.emit("call Std::str_i64");
                    g.emit(format!("stloc {st}"));
                    g.emit_label(&ok);
                });
                self.emit(format!("ldloc {st}"));
                self.emit("call Std::println");
            }
        }
    }
}
