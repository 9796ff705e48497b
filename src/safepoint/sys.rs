//! Operating-system pieces of the safepoint mechanism (Linux): the polling
//! page mapping, futex wait/wake, per-thread alternate signal stacks, and the
//! SIGSEGV/SIGBUS handler with its chaining to the previously installed one.
//!
//! Everything reachable from [`on_fault`] is async-signal-safe: it reads
//! atomics and a `const`-initialised thread-local, makes raw system calls
//! (`futex`, `sigaction`, `pthread_sigmask`, `raise`, `write`) and calls the
//! previous handler. It never allocates, locks, formats or panics (only
//! wrapping arithmetic, no indexing that could fail).

use super::SafepointError;
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

/// The system page size (4096 if `sysconf` cannot tell).
pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Map `len` bytes of private anonymous memory with protection `prot`.
pub(super) fn map(len: usize, prot: i32, what: &'static str) -> Result<*mut u8, SafepointError> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address touches
    // no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(SafepointError::Os {
            what,
            errno: errno(),
        });
    }
    Ok(p.cast())
}

/// Map one page-sized anonymous shared memory object (a memfd) twice:
/// `(poll_view, write_view)`. The first view starts readable and is the
/// polling page (its protection changes with [`protect`]); the second view
/// stays readable and writable, so the runtime can change the page's bytes
/// (the interrupt hint) while the first view is inaccessible. `None` if the
/// system has no `memfd_create` or refuses the mappings; the caller then
/// maps a private page with [`map`] and does without a writable view.
pub(super) fn map_dual(len: usize) -> Option<(*mut u8, *mut u8)> {
    // SAFETY: the name is a NUL-terminated literal; flags are valid.
    let fd = unsafe { libc::memfd_create(c"kiln-poll".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let unmap = |p: *mut libc::c_void| {
        // SAFETY: `p` is a mapping of `len` bytes made just above.
        unsafe { libc::munmap(p, len) };
    };
    // SAFETY: `fd` is our fresh memfd; mapping it at kernel-chosen addresses
    // touches no existing memory; it is closed on every path (the mappings
    // keep the object alive).
    let r = unsafe {
        if libc::ftruncate(fd, len as libc::off_t) != 0 {
            None
        } else {
            let shared = |prot| libc::mmap(ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0);
            let poll = shared(libc::PROT_READ);
            let write = shared(libc::PROT_READ | libc::PROT_WRITE);
            match (poll == libc::MAP_FAILED, write == libc::MAP_FAILED) {
                (false, false) => Some((poll.cast(), write.cast())),
                (true, false) => {
                    unmap(write);
                    None
                }
                (false, true) => {
                    unmap(poll);
                    None
                }
                (true, true) => None,
            }
        }
    };
    // SAFETY: `fd` is ours and not used after this.
    unsafe { libc::close(fd) };
    r
}

/// Change the protection of `[addr, addr + len)`.
///
/// # Safety
/// The range must be (part of) a mapping made by [`map`] that no Rust
/// reference points into with an access the new protection forbids, except
/// through the polling protocol (loads that fault and are handled).
pub(super) unsafe fn protect(
    addr: *mut u8,
    len: usize,
    prot: i32,
    what: &'static str,
) -> Result<(), SafepointError> {
    // SAFETY: the caller guarantees the range is one of our mappings.
    if unsafe { libc::mprotect(addr.cast(), len, prot) } != 0 {
        return Err(SafepointError::Os {
            what,
            errno: errno(),
        });
    }
    Ok(())
}

/// Block while `word == expected` (or until `timeout`); returns `false` on timeout.
/// Spurious returns are possible: callers re-check their condition.
/// Async-signal-safe (one system call).
pub(super) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    let ts;
    let tsp = match timeout {
        Some(d) => {
            ts = libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            };
            &ts as *const libc::timespec
        }
        None => ptr::null(),
    };
    // SAFETY: FUTEX_WAIT reads the u32 at a valid, aligned address (an atomic
    // that outlives the call) and an optional relative timeout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
            ptr::null::<u32>(),
            0u32,
        )
    };
    // SAFETY: __errno_location returns this thread's errno slot.
    !(r == -1 && unsafe { *libc::__errno_location() } == libc::ETIMEDOUT)
}

/// Wake up to `n` threads blocked in [`futex_wait`] on `word`. Async-signal-safe.
pub(super) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
            ptr::null::<libc::timespec>(),
            ptr::null::<u32>(),
            0u32,
        );
    }
}

/// The calling thread's OS thread id.
pub(super) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Usable size of each registered thread's alternate signal stack.
const ALT_STACK_SIZE: usize = 64 << 10;

/// A thread's alternate signal stack (ours), and the one it replaced.
pub(super) struct AltStack {
    base: *mut u8,
    len: usize,
    old: libc::stack_t,
}

impl AltStack {
    /// Map a stack (with a guard page below it) and make it the calling
    /// thread's alternate signal stack.
    pub(super) fn install() -> Result<AltStack, SafepointError> {
        let page = page_size();
        let len = ALT_STACK_SIZE + page;
        let base = map(len, libc::PROT_READ | libc::PROT_WRITE, "mmap alt stack")?;
        let fail = |what| {
            let e = errno();
            // SAFETY: `base` is the mapping of `len` bytes made above, unused.
            unsafe { libc::munmap(base.cast(), len) };
            SafepointError::Os { what, errno: e }
        };
        // SAFETY: the lowest page of our own fresh mapping becomes the guard.
        if unsafe { libc::mprotect(base.cast(), page, libc::PROT_NONE) } != 0 {
            return Err(fail("mprotect alt stack guard"));
        }
        let new = libc::stack_t {
            // SAFETY: `page < len`, so this stays inside the mapping.
            ss_sp: unsafe { base.add(page) }.cast(),
            ss_flags: 0,
            ss_size: ALT_STACK_SIZE,
        };
        // SAFETY: an all-zero stack_t is a valid value to be overwritten.
        let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: `new` describes writable memory owned by this AltStack,
        // which restores `old` before unmapping it (Drop, same thread: the
        // owner is !Send).
        if unsafe { libc::sigaltstack(&new, &mut old) } != 0 {
            return Err(fail("sigaltstack"));
        }
        Ok(AltStack { base, len, old })
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let mut old = self.old;
        old.ss_flags &= libc::SS_DISABLE;
        // SAFETY: restores the thread's previous alternate stack (or disables
        // it); we are not running on ours (Drop never runs in our handler).
        unsafe { libc::sigaltstack(&old, ptr::null_mut()) };
        // SAFETY: our mapping is no longer the alternate stack, nothing uses it.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Start address of the polling page (0 before initialisation); read by the handler.
pub(super) static PAGE_ADDR: AtomicUsize = AtomicUsize::new(0);
/// Length of the polling page mapping.
pub(super) static PAGE_LEN: AtomicUsize = AtomicUsize::new(0);

/// A `sigaction` slot written once (before our handler is installed) and
/// afterwards only read, by the handler.
struct PrevAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written exactly once under the `init` OnceLock before the handler
// that reads it is installed (sigaction is a full barrier for the process);
// read-only afterwards.
unsafe impl Sync for PrevAction {}

static PREV_SEGV: PrevAction = PrevAction(UnsafeCell::new(MaybeUninit::uninit()));
static PREV_BUS: PrevAction = PrevAction(UnsafeCell::new(MaybeUninit::uninit()));

/// Install [`on_fault`] for SIGSEGV and SIGBUS, saving the previous actions.
///
/// # Safety
/// Call at most once per process (the caller's `OnceLock` guarantees it).
pub(super) unsafe fn install_handlers() -> Result<(), SafepointError> {
    for (sig, slot) in [(libc::SIGSEGV, &PREV_SEGV), (libc::SIGBUS, &PREV_BUS)] {
        // SAFETY: reading the current action into our static slot; nobody
        // reads the slot before our handler is installed below.
        if unsafe { libc::sigaction(sig, ptr::null(), (*slot.0.get()).as_mut_ptr()) } != 0 {
            return Err(SafepointError::Os {
                what: "sigaction (query)",
                errno: errno(),
            });
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: a zeroed sigaction is a valid value; fields are set below.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_fault as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `act.sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: installs an async-signal-safe handler with the flags above.
        if unsafe { libc::sigaction(sig, &act, ptr::null_mut()) } != 0 {
            return Err(SafepointError::Os {
                what: "sigaction (install)",
                errno: errno(),
            });
        }
    }
    Ok(())
}

/// Write a fixed message to standard error (async-signal-safe).
fn write_stderr(msg: &[u8]) {
    // SAFETY: write(2) on fd 2 with a valid buffer; the result is irrelevant.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// The SIGSEGV/SIGBUS handler. Runs on the thread's alternate signal stack.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot; we restore
    // it so the interrupted code never sees our system calls' errors.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: as above, a valid thread-local int.
    let saved = unsafe { *errno_slot };
    // SAFETY: `info` and `uctx` come from the kernel for this signal.
    if !unsafe { handle_poll(info, uctx) } {
        // SAFETY: same arguments, passed on unchanged.
        unsafe { forward(sig, info, uctx) };
    }
    // SAFETY: as above.
    unsafe { *errno_slot = saved };
}

/// If this fault is a poll of the armed page by a registered thread, park the
/// thread until the world restarts and return `true` (the load re-executes).
///
/// # Safety
/// `info` / `uctx` must be the kernel's arguments to an SA_SIGINFO handler.
unsafe fn handle_poll(info: *mut libc::siginfo_t, uctx: *mut libc::c_void) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: non-null siginfo from the kernel.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code <= 0: sent by kill/raise/sigqueue, not a memory fault.
    if code <= 0 {
        return false;
    }
    let page = PAGE_ADDR.load(Ordering::Relaxed);
    if page == 0 || addr.wrapping_sub(page) >= PAGE_LEN.load(Ordering::Relaxed) {
        return false;
    }
    let rec = super::current_record();
    if rec.is_null() {
        return false; // an unregistered thread: not provably ours to park
    }
    // SAFETY: a registered thread's record lives until it unregisters, which
    // this thread cannot be doing while it executes a poll.
    let rec = unsafe { &*rec };
    if rec.in_stw.load(Ordering::Relaxed) {
        write_stderr(b"kiln: safepoint poll inside a stop_the_world callback\n");
        return false;
    }
    let (pc, sp, fp) = if uctx.is_null() {
        (0, 0, 0)
    } else {
        // SAFETY: for SA_SIGINFO handlers the third argument is a ucontext_t.
        unsafe { registers(&*(uctx as *const libc::ucontext_t)) }
    };
    super::park_at_poll(rec, pc, sp, fp);
    true
}

#[cfg(target_arch = "x86_64")]
fn registers(uc: &libc::ucontext_t) -> (usize, usize, usize) {
    let g = &uc.uc_mcontext.gregs;
    (
        g[libc::REG_RIP as usize] as usize,
        g[libc::REG_RSP as usize] as usize,
        g[libc::REG_RBP as usize] as usize,
    )
}

#[cfg(target_arch = "aarch64")]
fn registers(uc: &libc::ucontext_t) -> (usize, usize, usize) {
    let m = &uc.uc_mcontext;
    (m.pc as usize, m.sp as usize, m.regs[29] as usize)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn registers(_uc: &libc::ucontext_t) -> (usize, usize, usize) {
    (0, 0, 0)
}

/// Pass a fault that is not ours to the action that was installed before ours.
///
/// # Safety
/// Same arguments as the handler received from the kernel.
unsafe fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    let slot = match sig {
        libc::SIGSEGV => &PREV_SEGV,
        libc::SIGBUS => &PREV_BUS,
        _ => return,
    };
    // SAFETY: written before our handler was installed, read-only since.
    let prev: &libc::sigaction = unsafe { (*slot.0.get()).assume_init_ref() };
    let handler = prev.sa_sigaction;
    let from_kernel = !info.is_null() && {
        // SAFETY: non-null siginfo from the kernel.
        unsafe { (*info).si_code > 0 }
    };
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        if handler == libc::SIG_IGN && !from_kernel {
            return; // an ignored signal sent by kill/raise stays ignored
        }
        // The default action (a synchronous fault cannot be ignored): reset
        // the disposition and let the signal happen again.
        // SAFETY: a zeroed sigaction with SIG_DFL is a valid action.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: valid sigset to initialise; sigaction is async-signal-safe.
        unsafe {
            libc::sigemptyset(&mut dfl.sa_mask);
            libc::sigaction(sig, &dfl, ptr::null_mut());
        }
        if !from_kernel {
            // Not a faulting instruction, so returning would not repeat it:
            // re-raise (pending until this handler returns, then default).
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(sig) };
        }
        return; // the faulting instruction re-executes and takes the default action
    }
    if prev.sa_flags & libc::SA_RESETHAND != 0 {
        // The kernel would have reset the disposition on entry to that handler.
        // SAFETY: as above.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: as above.
        unsafe {
            libc::sigemptyset(&mut dfl.sa_mask);
            libc::sigaction(sig, &dfl, ptr::null_mut());
        }
    }
    // Block what the previous handler asked to have blocked while it runs;
    // the kernel restores the interrupted mask when our handler returns.
    // SAFETY: pthread_sigmask with a valid set; async-signal-safe.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &prev.sa_mask, ptr::null_mut()) };
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous owner installed this address as an
        // SA_SIGINFO handler, so it has this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, uctx);
    } else {
        // SAFETY: installed without SA_SIGINFO, so a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}
