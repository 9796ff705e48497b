//! Evaluation stacks stored as a tree of shared nodes.
//!
//! Storing every instruction's stack as its own vector costs instructions ×
//! depth: a method that keeps 1,000 references on the stack across 16,000
//! instructions needed 16 million stack types (about 0.9 GB). Consecutive
//! stacks differ only at the top, so each stack is instead a pointer to its
//! top *node*, and each node holds one slot's type and a pointer to the node
//! below it (a persistent stack, like a cons list). Pushing creates one node;
//! popping follows pointers; a stack that several instructions share (all of
//! an unchanged prefix) is stored once. Types are interned per method, so a
//! node is 12 bytes.
//!
//! Nodes are only ever added, and a node's `below` is always an older node
//! (a smaller index), so one pass in index order visits every node after the
//! one below it ([`Stacks::ref_map`] relies on that).

use super::VType;
use std::collections::HashMap;
use std::fmt;

/// "No stack": the instruction is unreachable.
pub(super) const NONE: u32 = u32::MAX;
/// The empty stack.
pub(super) const EMPTY: u32 = u32::MAX - 1;
/// Used while compacting.
const MARKED: u32 = u32::MAX - 2;

/// Bytes of one stack node ([`Stacks`] holds one per distinct slot).
pub const NODE_BYTES: usize = std::mem::size_of::<Node>();

/// Most stack values an error message shows (the top ones).
pub const SHOWN: usize = 16;

/// One stack slot: its type and the slot below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Node {
    /// Index into the type table.
    pub ty: u32,
    /// The node below, or [`EMPTY`].
    pub below: u32,
    /// Stack depth with this node on top (1 for a bottom node).
    pub depth: u32,
}

/// The stack types of one method: nodes of shared stacks and their types.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stacks {
    pub(super) nodes: Vec<Node>,
    pub(super) types: Vec<VType>,
}

impl Stacks {
    /// Depth of the stack whose top is `s` (a node or [`EMPTY`]).
    pub(super) fn depth(&self, s: u32) -> usize {
        if s == EMPTY {
            0
        } else {
            self.nodes[s as usize].depth as usize
        }
    }

    /// Number of stack nodes.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes held (nodes and the type table, not the types' heap data).
    pub fn bytes(&self) -> usize {
        self.nodes.capacity() * NODE_BYTES + self.types.capacity() * std::mem::size_of::<VType>()
    }

    /// The stack whose top is `s`, bottom first.
    pub(super) fn to_vec(&self, s: u32) -> Vec<VType> {
        let mut v: Vec<VType> = Stack { s: self, top: s }.iter_from_top().cloned().collect();
        v.reverse();
        v
    }

    /// The stack whose top is `s` as an error message shows it.
    pub(super) fn shot(&self, s: u32) -> StackShot {
        let mut top: Vec<VType> = Stack { s: self, top: s }
            .iter_from_top()
            .take(SHOWN)
            .cloned()
            .collect();
        top.reverse();
        StackShot {
            depth: self.depth(s),
            top,
        }
    }

    /// Keep only the nodes on the stacks `tops` (every entry a node,
    /// [`EMPTY`] or [`NONE`]) and the types they use; `tops` are rewritten
    /// to the new node indices. Linear in the number of nodes.
    pub(super) fn compact(&mut self, tops: &mut [u32]) {
        let mut map = vec![NONE; self.nodes.len()];
        for &t in tops.iter() {
            let mut x = t;
            while x < MARKED && map[x as usize] == NONE {
                map[x as usize] = MARKED;
                x = self.nodes[x as usize].below;
            }
        }
        let mut tmap = vec![NONE; self.types.len()];
        let mut nodes = Vec::new();
        let mut types = Vec::new();
        for (x, n) in self.nodes.iter().enumerate() {
            if map[x] != MARKED {
                continue;
            }
            let ty = &mut tmap[n.ty as usize];
            if *ty == NONE {
                *ty = types.len() as u32;
                types.push(self.types[n.ty as usize].clone());
            }
            let below = if n.below == EMPTY {
                EMPTY
            } else {
                map[n.below as usize]
            };
            map[x] = nodes.len() as u32;
            nodes.push(Node {
                ty: *ty,
                below,
                depth: n.depth,
            });
        }
        for t in tops.iter_mut() {
            if *t < MARKED {
                *t = map[*t as usize];
            }
        }
        self.nodes = nodes;
        self.types = types;
    }

    /// The reference positions of the stacks `tops` (see [`RefMap`]).
    pub(super) fn ref_map(&self, tops: &[u32]) -> RefMap {
        // Nearest reference node at or below each stack node; nodes come
        // after the node below them, so one forward pass suffices.
        let mut near = Vec::with_capacity(self.nodes.len());
        let mut out = RefMap::default();
        for n in &self.nodes {
            let below = if n.below == EMPTY {
                NONE
            } else {
                near[n.below as usize]
            };
            if self.types[n.ty as usize].is_ref() {
                near.push(out.nodes.len() as u32);
                out.nodes.push((n.depth - 1, below));
            } else {
                near.push(below);
            }
        }
        out.tops = tops
            .iter()
            .map(|&t| if t < EMPTY { near[t as usize] } else { NONE })
            .collect();
        out
    }
}

/// The stack before one instruction, bottom first: a view into a method's
/// [`Stacks`]. Getting it is O(1); [`Stack::top`] and [`Stack::len`] are
/// O(1), [`Stack::from_top`]`(k)` is O(k), [`Stack::to_vec`] is O(depth).
#[derive(Clone, Copy)]
pub struct Stack<'a> {
    pub(super) s: &'a Stacks,
    pub(super) top: u32,
}

impl<'a> Stack<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.s.depth(self.top)
    }

    /// No values?
    pub fn is_empty(&self) -> bool {
        self.top == EMPTY
    }

    /// The top value's type.
    pub fn top(&self) -> Option<&'a VType> {
        self.from_top(0)
    }

    /// The type `k` values below the top (`from_top(0)` is the top).
    pub fn from_top(&self, k: usize) -> Option<&'a VType> {
        self.iter_from_top().nth(k)
    }

    /// The types from the top down.
    pub fn iter_from_top(&self) -> impl Iterator<Item = &'a VType> + 'a {
        let s = self.s;
        let mut x = self.top;
        std::iter::from_fn(move || {
            if x >= EMPTY {
                return None;
            }
            let n = s.nodes[x as usize];
            x = n.below;
            Some(&s.types[n.ty as usize])
        })
    }

    /// `f` of every type, bottom first.
    pub fn map<T>(&self, f: impl FnMut(&'a VType) -> T) -> Vec<T> {
        let mut v: Vec<T> = self.iter_from_top().map(f).collect();
        v.reverse();
        v
    }

    /// The types, bottom first.
    pub fn to_vec(&self) -> Vec<VType> {
        self.s.to_vec(self.top)
    }
}

impl fmt::Debug for Stack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl PartialEq<[VType]> for Stack<'_> {
    fn eq(&self, other: &[VType]) -> bool {
        self.len() == other.len() && self.iter_from_top().eq(other.iter().rev())
    }
}

/// Which evaluation-stack positions hold references before each
/// instruction (the collector's map of the evaluation stack), shared like
/// [`Stacks`]: per instruction its topmost reference, and per reference its
/// position (0 = bottom) and the next reference below. 4 bytes per
/// instruction and 8 per distinct reference slot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefMap {
    tops: Vec<u32>,
    nodes: Vec<(u32, u32)>,
}

impl RefMap {
    /// Call `f` with the position of every reference on the stack before
    /// instruction `i` (top first; nothing for an unreachable or
    /// out-of-range `i`).
    #[inline]
    pub fn for_each(&self, i: usize, mut f: impl FnMut(u32)) {
        let mut x = self.tops.get(i).copied().unwrap_or(NONE);
        while x != NONE {
            let (pos, below) = self.nodes[x as usize];
            f(pos);
            x = below;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.tops.capacity() * 4 + self.nodes.capacity() * 8
    }
}

/// A stack as an error message shows it: its depth and its top
/// [`SHOWN`] values at most, bottom first.
#[derive(Clone, Debug, PartialEq)]
pub struct StackShot {
    /// Number of values on the stack.
    pub depth: usize,
    /// The top values (all of them if `depth <= SHOWN`), bottom first.
    pub top: Vec<VType>,
}

impl StackShot {
    /// A shot of `s` (bottom first).
    pub fn of(s: &[VType]) -> StackShot {
        StackShot {
            depth: s.len(),
            top: s[s.len().saturating_sub(SHOWN)..].to_vec(),
        }
    }
}

impl fmt::Display for StackShot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        let hidden = self.depth.saturating_sub(self.top.len());
        if hidden > 0 {
            write!(f, "({hidden} more below)")?;
        }
        for (i, t) in self.top.iter().enumerate() {
            if i > 0 || hidden > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t}")?;
        }
        f.write_str("]")
    }
}

/// The stacks of a method being verified: [`Stacks`] plus the interning
/// table and the memo of merged stacks.
#[derive(Default)]
pub(super) struct Arena {
    pub s: Stacks,
    ids: HashMap<VType, u32>,
    /// `(old, incoming)` node pairs already merged, and their result.
    merged: HashMap<(u32, u32), u32>,
    /// Scratch for [`Arena::merge`].
    pairs: Vec<(u32, u32, u32)>,
}

/// Why two stacks do not merge.
pub(super) enum MergeErr {
    /// Different depths or unmergeable types.
    Mismatch,
}

impl Arena {
    /// Nodes created so far.
    pub fn len(&self) -> usize {
        self.s.nodes.len()
    }

    pub fn intern(&mut self, t: VType) -> u32 {
        if let Some(&i) = self.ids.get(&t) {
            return i;
        }
        let i = self.s.types.len() as u32;
        self.s.types.push(t.clone());
        self.ids.insert(t, i);
        i
    }

    /// Push type index `ty` on the stack `below`; returns the new top.
    pub fn push_ty(&mut self, below: u32, ty: u32) -> u32 {
        let depth = self.s.depth(below) as u32 + 1;
        self.s.nodes.push(Node { ty, below, depth });
        (self.s.nodes.len() - 1) as u32
    }

    /// The stack of `types` (bottom first).
    pub fn build(&mut self, types: &[VType]) -> u32 {
        let mut s = EMPTY;
        for t in types {
            let ty = self.intern(t.clone());
            s = self.push_ty(s, ty);
        }
        s
    }

    /// Merge the stack `new` into `old` (both tops of the same method)
    /// with `join` on slot types: returns the merged stack, `old` itself if
    /// nothing changes. Shares every node it can: the common part below both,
    /// unchanged nodes of either input, and earlier merges of the same two
    /// nodes.
    pub fn merge(
        &mut self,
        old: u32,
        new: u32,
        mut join: impl FnMut(&VType, &VType) -> Option<VType>,
    ) -> Result<u32, MergeErr> {
        if old == new {
            return Ok(old);
        }
        if self.s.depth(old) != self.s.depth(new) {
            return Err(MergeErr::Mismatch);
        }
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.clear();
        let (mut a, mut b) = (old, new);
        // Same depth: both reach EMPTY together, so `a == b` ends the walk.
        let mut base = loop {
            if a == b {
                break a;
            }
            if let Some(&m) = self.merged.get(&(a, b)) {
                break m;
            }
            let (na, nb) = (self.s.nodes[a as usize], self.s.nodes[b as usize]);
            let ty = if na.ty == nb.ty {
                na.ty
            } else {
                let (ta, tb) = (&self.s.types[na.ty as usize], &self.s.types[nb.ty as usize]);
                match join(ta, tb) {
                    Some(t) => self.intern(t),
                    None => {
                        self.pairs = pairs;
                        return Err(MergeErr::Mismatch);
                    }
                }
            };
            pairs.push((a, b, ty));
            a = na.below;
            b = nb.below;
        };
        for &(a, b, ty) in pairs.iter().rev() {
            let (na, nb) = (self.s.nodes[a as usize], self.s.nodes[b as usize]);
            base = if na.below == base && na.ty == ty {
                a
            } else if nb.below == base && nb.ty == ty {
                b
            } else {
                let x = self.push_ty(base, ty);
                self.merged.insert((a, b), x);
                x
            };
        }
        self.pairs = pairs;
        Ok(base)
    }

    /// Done: the stacks, without the interning table and the memo.
    pub fn finish(self) -> Stacks {
        self.s
    }
}

/// The stack of a method being verified that one instruction transforms:
/// a [`Vec`]-like view of a stack in an [`Arena`].
pub(super) struct Cur<'x> {
    pub ar: &'x mut Arena,
    pub top: u32,
}

impl Cur<'_> {
    pub fn len(&self) -> usize {
        self.ar.s.depth(self.top)
    }

    pub fn is_empty(&self) -> bool {
        self.top == EMPTY
    }

    pub fn push(&mut self, t: VType) {
        let ty = self.ar.intern(t);
        self.top = self.ar.push_ty(self.top, ty);
    }

    /// Push the top value again.
    pub fn dup(&mut self) {
        if self.top != EMPTY {
            let ty = self.ar.s.nodes[self.top as usize].ty;
            self.top = self.ar.push_ty(self.top, ty);
        }
    }

    pub fn pop(&mut self) -> Option<VType> {
        if self.top == EMPTY {
            return None;
        }
        let n = self.ar.s.nodes[self.top as usize];
        self.top = n.below;
        Some(self.ar.s.types[n.ty as usize].clone())
    }

    pub fn last(&self) -> Option<&VType> {
        Stack {
            s: &self.ar.s,
            top: self.top,
        }
        .top()
    }

    /// Remove the values above the first `at` and return them, bottom first.
    pub fn split_off(&mut self, at: usize) -> Vec<VType> {
        let k = self.len().saturating_sub(at);
        let mut v: Vec<VType> = (0..k).filter_map(|_| self.pop()).collect();
        v.reverse();
        v
    }

    pub fn clear(&mut self) {
        self.top = EMPTY;
    }

    /// The stack as an error message shows it.
    pub fn shot(&self) -> StackShot {
        self.ar.s.shot(self.top)
    }
}
