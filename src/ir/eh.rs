//! The exception-region state machine both tiers run: finding a handler for
//! a thrown exception (`dispatch`), the `finally` blocks a `leave` passes
//! (`next_finally`), and the per-frame state (`Cont`, `Caught`, kept in
//! `code::EhState`) that `endfinally` and `rethrow` continue from.
//!
//! Invariant: regions are innermost first; a continuation or caught
//! exception belongs to the region whose handler is running, and is dropped
//! when control leaves that handler.

use super::code::Code;
use crate::vm::object::class_of;
use crate::vm::ThreadCtx;

/// Exception-handling state of one frame (interpreted or compiled): the
/// `finally` continuations in progress and the caught exceptions (for
/// `rethrow`). The frame record's `EH` word points to it, so the collector
/// sees the exception objects it holds.
#[derive(Default)]
pub struct EhState {
    pub(crate) conts: Vec<Cont>,
    pub(crate) caught: Vec<Caught>,
}

impl EhState {
    /// Call `f` with every exception object this state holds.
    pub fn for_each_ref(&self, mut f: impl FnMut(*mut u8)) {
        for c in &self.conts {
            if let Cont::Unwind { exc, .. } = c {
                f(*exc);
            }
        }
        for c in &self.caught {
            f(c.exc);
        }
    }
}

/// A `finally` in progress: what to do at its `endfinally`.
pub(crate) enum Cont {
    /// Continue a `leave` from instruction `from` to `target`.
    Leave {
        region: usize,
        from: u32,
        target: u32,
    },
    /// Continue propagating `exc` (thrown at `from`).
    Unwind {
        region: usize,
        from: u32,
        exc: *mut u8,
        trace: crate::vm::thread::Trace,
    },
}

impl Cont {
    pub(crate) fn region(&self) -> usize {
        match self {
            Cont::Leave { region, .. } | Cont::Unwind { region, .. } => *region,
        }
    }
}

/// A caught exception, for `rethrow` inside its catch block.
pub(crate) struct Caught {
    pub(crate) region: usize,
    pub(crate) exc: *mut u8,
    pub(crate) trace: crate::vm::thread::Trace,
}

/// Is instruction `pc` the start of a handler placed before its try block?
/// The binary format allows that (kasm always puts a handler after its
/// try), and then every exception that reaches the handler moves control
/// backward without a branch: a loop `throw` → handler → `leave` forward
/// into the try → `throw` has no backward branch at all. Both modes poll
/// on entering such a handler (compiled code in its landing block), so the
/// loop still reaches safepoints and can be interrupted. Handlers after
/// their try are only reached forward (an exception edge goes from inside
/// a try to its handler, or from inside a handler to an enclosing try's
/// handler, which lies after that try): every other cycle contains a
/// backward branch, `switch` or `leave`, which polls.
pub(crate) fn backward_handler(code: &Code, pc: usize) -> bool {
    code.regions
        .iter()
        .any(|r| r.handler_start as usize == pc && r.handler_start < r.try_start)
}

/// The next `finally` (from region `start` on) that a `leave` from `from`
/// to `target` passes through.
pub(crate) fn next_finally(code: &Code, start: usize, from: u32, target: u32) -> Option<usize> {
    (start..code.regions.len()).find(|&i| {
        let r = &code.regions[i];
        r.catch.is_null() && r.in_try(from) && !r.in_try(target)
    })
}

/// Find a handler for the pending exception thrown at `from` (searching
/// regions from `start`). On success, sets `pc` to the handler, records the
/// catch or the finally continuation, and returns true; for a catch the
/// exception stays pending (the caller moves it onto the stack), for a finally
/// it is parked in the continuation. `at` is the current instruction (used to
/// abandon handler blocks the exception leaves).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch(
    t: &mut ThreadCtx,
    code: &Code,
    conts: &mut Vec<Cont>,
    caught: &mut Vec<Caught>,
    start: usize,
    from: u32,
    at: u32,
    pc: &mut usize,
) -> bool {
    let exc = t.pending;
    for i in start..code.regions.len() {
        let r = &code.regions[i];
        if !r.in_try(from) {
            continue;
        }
        let is_catch = !r.catch.is_null();
        if is_catch {
            // SAFETY: pending exceptions are live objects; catch classes live descriptors.
            let matches = unsafe { (*class_of(exc)).instance_of(&*r.catch) };
            if !matches {
                continue;
            }
        }
        let hs = r.handler_start;
        let leaves = |ri: usize| {
            let rr = &code.regions[ri];
            (rr.in_handler(at) || rr.in_handler(from)) && !rr.in_handler(hs)
        };
        conts.retain(|c| !leaves(c.region()));
        caught.retain(|c| !leaves(c.region));
        *pc = hs as usize;
        if is_catch {
            caught.push(Caught {
                region: i,
                exc,
                trace: t.trace.clone(),
            });
        } else {
            let trace = std::mem::take(&mut t.trace);
            conts.push(Cont::Unwind {
                region: i,
                from,
                exc,
                trace,
            });
            t.pending = std::ptr::null_mut();
        }
        return true;
    }
    false
}

/// `leave` from instruction `from` to `target`: drop the caught exceptions
/// of the handlers it leaves, then start the first `finally` on the way
/// (recording the continuation) or go to `target`. Returns the next
/// instruction.
#[inline]
pub fn leave(st: &mut EhState, code: &Code, from: u32, target: u32) -> u32 {
    st.caught.retain(|c| {
        let r = &code.regions[c.region];
        !r.in_handler(from) || r.in_handler(target)
    });
    match next_finally(code, 0, from, target) {
        Some(ri) => {
            st.conts.push(Cont::Leave {
                region: ri,
                from,
                target,
            });
            code.regions[ri].handler_start
        }
        None => target,
    }
}

/// What comes after an `endfinally` ([`endfinally`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFinally {
    /// Continue at this instruction (the next `finally` of a `leave`, or
    /// its target).
    Goto(u32),
    /// The propagating exception found a handler here (for a catch it is
    /// pending again: the handler's stack is that exception).
    Handler(u32),
    /// The exception propagates out of the frame (it is pending).
    Propagate,
    /// There is no `finally` in progress (cannot happen in verified code).
    NotInFinally,
}

/// `endfinally` at instruction `at`: continue the `leave` or the
/// propagation that ran this `finally`.
pub fn endfinally(t: &mut ThreadCtx, st: &mut EhState, code: &Code, at: u32) -> AfterFinally {
    match st.conts.pop() {
        Some(Cont::Leave {
            region,
            from,
            target,
        }) => match next_finally(code, region + 1, from, target) {
            Some(ri) => {
                st.conts.push(Cont::Leave {
                    region: ri,
                    from,
                    target,
                });
                AfterFinally::Goto(code.regions[ri].handler_start)
            }
            None => AfterFinally::Goto(target),
        },
        Some(Cont::Unwind {
            region,
            from,
            exc,
            trace,
        }) => {
            t.pending = exc;
            t.trace = trace;
            let mut pc = 0usize;
            if dispatch(
                t,
                code,
                &mut st.conts,
                &mut st.caught,
                region + 1,
                from,
                at,
                &mut pc,
            ) {
                AfterFinally::Handler(pc as u32)
            } else {
                AfterFinally::Propagate
            }
        }
        None => AfterFinally::NotInFinally,
    }
}
