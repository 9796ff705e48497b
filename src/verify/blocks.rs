//! Exception-region structure of one method.
//!
//! The handler clauses of a method give protected blocks: try ranges (clauses
//! sharing a try range share one block) and handler ranges. After validation
//! the blocks form a laminar family (any two are disjoint or nested, never
//! equal), so they are a forest: each block has a parent (the smallest block
//! strictly containing it) and each instruction an innermost block. Control
//! edges are then checked by walking up from the source's and the target's
//! innermost blocks: blocks exited must be left by `leave` (never out of a
//! finally), blocks entered must be try blocks entered at their start.

use super::{BlockKind, Cx, VType, VerifyErrorKind as K};
use crate::library::program::ClassId;
use crate::library::{HandlerKind, MethodDef, TypeKind, TypeSig, EXCEPTION};

/// Most handler clauses one method may have (keeps the pairwise checks bounded).
pub(super) const MAX_HANDLERS: usize = 1024;

/// One protected block.
#[derive(Clone, Debug)]
pub(super) struct Block {
    pub start: u32,
    pub end: u32,
    pub kind: BlockKind,
    pub parent: Option<usize>,
}

/// How control moves along an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Edge {
    /// Falling through to the next instruction.
    Fall,
    /// A branch or switch.
    Branch,
    /// `leave`.
    Leave,
}

/// The validated block forest of one method.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    pub blocks: Vec<Block>,
    /// Innermost block containing each instruction (by instruction index).
    pub innermost: Vec<Option<usize>>,
    /// Handler entry points: (instruction index, entry stack).
    pub seeds: Vec<(usize, Vec<VType>)>,
}

impl Blocks {
    fn contains(&self, b: usize, off: u32) -> bool {
        let b = &self.blocks[b];
        b.start <= off && off < b.end
    }

    /// Is `off` the start of some try block?
    pub fn is_try_start(&self, off: u32) -> bool {
        self.blocks
            .iter()
            .any(|b| b.kind == BlockKind::Try && b.start == off)
    }

    /// The innermost handler (catch/finally) block around instruction `i`, skipping try blocks.
    pub fn innermost_handler(&self, i: usize) -> Option<BlockKind> {
        let mut x = self.innermost.get(i).copied().flatten();
        while let Some(b) = x {
            if self.blocks[b].kind != BlockKind::Try {
                return Some(self.blocks[b].kind);
            }
            x = self.blocks[b].parent;
        }
        None
    }

    /// Errors for control moving from instruction `from` (offset `from_off`,
    /// `None` for the method entry) to instruction `to` at `to_off`.
    pub fn check_edge(
        &self,
        from: Option<(usize, u32)>,
        to: usize,
        to_off: u32,
        edge: Edge,
    ) -> Vec<K> {
        let mut errs = Vec::new();
        if let Some((fi, from_off)) = from {
            let mut x = self.innermost[fi];
            while let Some(b) = x {
                if self.contains(b, to_off) {
                    break;
                }
                let kind = self.blocks[b].kind;
                if edge != Edge::Leave {
                    errs.push(K::ExitProtected(kind));
                    break;
                }
                if kind == BlockKind::Finally {
                    errs.push(K::LeaveFinally);
                    break;
                }
                x = self.blocks[b].parent;
            }
            if !errs.is_empty() {
                return errs;
            }
            let mut y = self.innermost[to];
            while let Some(b) = y {
                if self.contains(b, from_off) {
                    break;
                }
                if let Some(e) = self.enter_error(b, to_off) {
                    errs.push(e);
                    break;
                }
                y = self.blocks[b].parent;
            }
        } else {
            let mut y = self.innermost[to];
            while let Some(b) = y {
                if let Some(e) = self.enter_error(b, to_off) {
                    errs.push(e);
                    break;
                }
                y = self.blocks[b].parent;
            }
        }
        errs
    }

    fn enter_error(&self, b: usize, to_off: u32) -> Option<K> {
        let blk = &self.blocks[b];
        match blk.kind {
            BlockKind::Try if blk.start == to_off => None,
            BlockKind::Try => Some(K::EnterTryMiddle),
            k => Some(K::EnterHandler(k)),
        }
    }
}

/// Validate the handler clauses of method `m` of class `cls` and build its
/// block forest. `offsets` are the instruction starts (sorted). Errors are
/// returned with the code offset they concern.
pub(super) fn build(
    cx: &Cx,
    cls: ClassId,
    m: &MethodDef,
    offsets: &[u32],
) -> (Blocks, Vec<(u32, K)>) {
    let mut errs = Vec::new();
    let mut out = Blocks {
        innermost: vec![None; offsets.len()],
        ..Default::default()
    };
    if m.handlers.is_empty() {
        return (out, errs);
    }
    if m.handlers.len() > MAX_HANDLERS {
        errs.push((0, K::TooManyHandlers(m.handlers.len())));
        return (out, errs);
    }
    let len = m.code.len() as u32;
    let is_start = |o: u32| offsets.binary_search(&o).is_ok();
    let is_end = |o: u32| o == len || is_start(o);
    let li = cls.lib as usize;
    let lib = cx.p.lib_of(cls);
    let mut blocks: Vec<Block> = Vec::new();
    let mut seeds: Vec<(u32, Vec<VType>)> = Vec::new();
    for h in &m.handlers {
        let at = h.try_start;
        let why = if h.try_start >= h.try_end || h.handler_start >= h.handler_end {
            Some("empty or reversed range")
        } else if h.try_end > len || h.handler_end > len {
            Some("range beyond the end of the code")
        } else if !is_start(h.try_start)
            || !is_start(h.handler_start)
            || !is_end(h.try_end)
            || !is_end(h.handler_end)
        {
            Some("range boundary is not an instruction boundary")
        } else if h.try_start < h.handler_end && h.handler_start < h.try_end {
            Some("handler overlaps its try block")
        } else {
            None
        };
        if let Some(why) = why {
            errs.push((at, K::BadHandlerRange(why)));
            continue;
        }
        let (kind, entry) = match &h.kind {
            HandlerKind::Finally => (BlockKind::Finally, vec![]),
            HandlerKind::Catch(ti) => {
                let exc = TypeSig::class(EXCEPTION);
                let ty = match lib.type_refs.get(*ti as usize) {
                    None => {
                        errs.push((h.handler_start, K::BadTypeRef(*ti)));
                        exc
                    }
                    Some(t) => match catch_type_ok(cx, li, t) {
                        Ok(()) => t.clone(),
                        Err(e) => {
                            errs.push((h.handler_start, e));
                            exc
                        }
                    },
                };
                (BlockKind::Catch, vec![VType::Ref(ty)])
            }
        };
        if !blocks
            .iter()
            .any(|b| b.kind == BlockKind::Try && b.start == h.try_start && b.end == h.try_end)
        {
            blocks.push(Block {
                start: h.try_start,
                end: h.try_end,
                kind: BlockKind::Try,
                parent: None,
            });
        }
        blocks.push(Block {
            start: h.handler_start,
            end: h.handler_end,
            kind,
            parent: None,
        });
        seeds.push((h.handler_start, entry));
    }
    // Laminar: any two blocks are disjoint or strictly nested.
    for i in 0..blocks.len() {
        for j in i + 1..blocks.len() {
            let (a, b) = (&blocks[i], &blocks[j]);
            let overlap = a.start < b.end && b.start < a.end;
            let equal = a.start == b.start && a.end == b.end;
            let nested =
                (a.start <= b.start && b.end <= a.end) || (b.start <= a.start && a.end <= b.end);
            if equal || (overlap && !nested) {
                errs.push((b.start.max(a.start), K::BlocksOverlap));
                return (out, errs);
            }
        }
    }
    blocks.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut open: Vec<usize> = Vec::new();
    let mut next = 0;
    for (i, &off) in offsets.iter().enumerate() {
        while open.last().is_some_and(|&b| blocks[b].end <= off) {
            open.pop();
        }
        while next < blocks.len() && blocks[next].start <= off {
            blocks[next].parent = open.last().copied();
            open.push(next);
            next += 1;
        }
        out.innermost[i] = open.last().copied();
    }
    out.blocks = blocks;
    out.seeds = seeds
        .into_iter()
        .filter_map(|(off, st)| offsets.binary_search(&off).ok().map(|i| (i, st)))
        .collect();
    (out, errs)
}

/// A catch type must be `Exception` or one of its subclasses.
fn catch_type_ok(cx: &Cx, li: usize, t: &TypeSig) -> Result<(), K> {
    let TypeSig::Class(n) = t else {
        return Err(K::BadCatchType(t.clone()));
    };
    let id = cx.check_class_name(li, n)?;
    let exc = cx.p.class(EXCEPTION);
    let ok = cx.p.def(id).kind == TypeKind::Class && exc.is_some_and(|e| cx.p.is_subclass(id, e));
    if ok {
        Ok(())
    } else {
        Err(K::BadCatchType(t.clone()))
    }
}
