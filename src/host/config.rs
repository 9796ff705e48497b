//! [`Config`]: how a [`Vm`](super::Vm) runs (execution mode, heap limit,
//! stack size of the threads Kiln starts, collector options).

use super::Error;
use crate::runtime::{parse_flag, parse_size, ExecMode, Options};

/// How a [`Vm`](super::Vm) runs its code. Build one with [`Config::new`]
/// (the defaults) or [`Config::from_env`] (the `KILN_*` variables the `kiln`
/// command honours) and adjust it with the builder methods.
///
/// ```
/// use kiln::{Config, ExecMode};
/// let mut config = Config::new();
/// config.mode(ExecMode::Interp).max_heap(64 << 20).gc_stress(false);
/// assert_eq!(config.get_mode(), ExecMode::Interp);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) opts: Options,
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

impl Config {
    /// The defaults: JIT mode, a 2 GiB heap limit, 512 MiB of native stack
    /// for threads Kiln starts, no GC stress, no GC log, no deadline.
    pub fn new() -> Config {
        Config {
            opts: Options::default(),
        }
    }

    /// The defaults, overridden by `KILN_JIT` (`0`/`off`, `1`/`on`),
    /// `KILN_HEAP_MAX` (bytes with an optional `K`/`M`/`G` suffix),
    /// `KILN_GC_STRESS` and `KILN_GC_LOG` (`0`/`off`, `1`/`on`) and
    /// `KILN_DEADLINE` (`500ms`, `2s`, `5m`: see [`Config::deadline`]) and
    /// `KILN_MAX_THREADS` (see [`Config::max_threads`]), exactly as
    /// the `kiln` command reads them. A bad value is an [`Error::Config`]
    /// naming the variable and the accepted values.
    pub fn from_env() -> Result<Config, Error> {
        let var = |n: &str| std::env::var(n).ok();
        Config::from_vars(|n| var(n))
    }

    /// [`Config::from_env`] with the variables looked up through `get`
    /// (for tests and hosts with their own configuration source).
    ///
    /// ```
    /// use kiln::{Config, Error, ExecMode};
    /// let c = Config::from_vars(|n| (n == "KILN_JIT").then(|| "0".to_string())).unwrap();
    /// assert_eq!(c.get_mode(), ExecMode::Interp);
    /// let e = Config::from_vars(|n| (n == "KILN_GC_LOG").then(|| "yes".to_string())).unwrap_err();
    /// assert!(matches!(e, Error::Config { ref variable, .. } if variable == "KILN_GC_LOG"));
    /// ```
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let bad = |variable: &str, message: String| Error::Config {
            variable: variable.to_string(),
            message,
        };
        let jit = get("KILN_JIT");
        let mut opts = Options::from_vars(jit.as_deref(), None).map_err(|m| bad("KILN_JIT", m))?;
        if let Some(h) = get("KILN_HEAP_MAX") {
            opts.heap_max = parse_size(&h).ok_or_else(|| {
                bad(
                    "KILN_HEAP_MAX",
                    format!("KILN_HEAP_MAX={h:?} is not valid: expected a byte count with an optional K, M or G suffix"),
                )
            })?;
        }
        if let Some(d) = get("KILN_DEADLINE") {
            opts.deadline = Some(
                crate::safepoint::interrupt::parse_deadline("KILN_DEADLINE", &d)
                    .map_err(|m| bad("KILN_DEADLINE", m))?,
            );
        }
        if let Some(n) = get("KILN_MAX_THREADS") {
            opts.max_threads =
                crate::runtime::parse_max_threads(&n).map_err(|m| bad("KILN_MAX_THREADS", m))?;
        }
        for (name, slot) in [
            ("KILN_GC_STRESS", &mut opts.gc_stress),
            ("KILN_GC_LOG", &mut opts.gc_log),
        ] {
            *slot = parse_flag(name, get(name).as_deref()).map_err(|m| bad(name, m))?;
        }
        Ok(Config { opts })
    }

    /// Run in the interpreter ([`ExecMode::Interp`]) or compile every
    /// method with Cranelift before its first call ([`ExecMode::Jit`]).
    pub fn mode(&mut self, mode: ExecMode) -> &mut Config {
        self.opts.mode = mode;
        self
    }

    /// Shorthand for `mode(if on { Jit } else { Interp })`.
    pub fn jit(&mut self, on: bool) -> &mut Config {
        self.mode(if on { ExecMode::Jit } else { ExecMode::Interp })
    }

    /// Maximum bytes of managed objects; allocation beyond it raises
    /// `OutOfMemoryException` in the program.
    pub fn max_heap(&mut self, bytes: usize) -> &mut Config {
        self.opts.heap_max = bytes;
        self
    }

    /// Native stack size of threads the program starts (`Thread::start`,
    /// capped at 64 MiB). Host threads calling in use their own stack.
    pub fn stack_size(&mut self, bytes: usize) -> &mut Config {
        self.opts.stack_size = bytes;
        self
    }

    /// At most `n` threads started by the program (`Thread::start`) run at
    /// once; one more start raises `OutOfMemoryException` in the program.
    /// The default keeps clear of the system's limits (see `KILN_MAX_THREADS`
    /// in the README).
    pub fn max_threads(&mut self, n: usize) -> &mut Config {
        self.opts.max_threads = n.max(1);
        self
    }

    /// Collect garbage at every allocation (slow; finds rooting bugs).
    pub fn gc_stress(&mut self, on: bool) -> &mut Config {
        self.opts.gc_stress = on;
        self
    }

    /// Print one line per collection on stderr.
    pub fn gc_log(&mut self, on: bool) -> &mut Config {
        self.opts.gc_log = on;
        self
    }

    /// Limit every top-level call from the host (a method call, a
    /// constructor, a typed call; not the calls natives make back into
    /// Kiln, which count towards their caller's limit) to `limit`: when it
    /// passes, the call's thread throws `InterruptedException` (message
    /// `deadline of ... exceeded`) at its next safepoint poll. `None`
    /// (the default): no limit. One timer thread per Vm serves all calls.
    pub fn deadline(&mut self, limit: Option<std::time::Duration>) -> &mut Config {
        self.opts.deadline = limit;
        self
    }

    /// The configured per-call deadline.
    pub fn get_deadline(&self) -> Option<std::time::Duration> {
        self.opts.deadline
    }

    /// The configured execution mode.
    pub fn get_mode(&self) -> ExecMode {
        self.opts.mode
    }

    /// The configured heap limit in bytes.
    pub fn get_max_heap(&self) -> usize {
        self.opts.heap_max
    }

    /// Whether GC stress mode is on.
    pub fn get_gc_stress(&self) -> bool {
        self.opts.gc_stress
    }
}
