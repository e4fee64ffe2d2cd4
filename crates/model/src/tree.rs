//! The stored form of a tree and the inference loop. Nodes sit in one array; a split's
//! two children are adjacent, so a node needs one child index and the walk is
//! `i = left + (x > threshold)`.
//!
//! Training builds [`Node`]s (16 bytes, every field spelled out); a [`Tree`] packs
//! them into 8 bytes each: one `f32` that is the split's threshold or the leaf's
//! value (a node is one or the other), and one `u32` holding the left child's index
//! above the feature's 8 bits. A tree whose splits use feature 255 or more, or with
//! 2^24 nodes or more, keeps a 12-byte form instead. A full-depth forest is tens of
//! megabytes of nodes walked from memory, so half the bytes is about half the cache
//! misses and half a server's model memory.
//!
//! Each node's cover (the training weight that reached it) sits in its own array
//! beside the nodes: only explanations read it, and the inference walk should not
//! drag it through the cache. Covers that are whole counts (every tree trained so far:
//! row counts and bootstrap counts) are kept as `u32`, others as `f64`; both exactly.
//!
//! A tree read from an artifact is relaid for the walk ([`Tree::relaid`]): training
//! numbers nodes depth-first, so a walk that turns away from the first-grown side
//! lands far away and pays a cache miss for nearly every step. The relaid form packs
//! each pair with its likeliest descendants (by cover) into one 64-byte line, which
//! about halves the lines a walk touches. Index-based methods still speak of the
//! original numbering, so explanations, reports and written artifacts do not change.

use std::ops::ControlFlow;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// `feature` of a leaf.
pub const LEAF: u32 = u32::MAX;

/// One node, unpacked: what training builds and what readers see through
/// [`Tree::node`]. A leaf's `threshold` and `left` are 0, as are a split's `value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    pub feature: u32,
    pub threshold: f32,
    pub left: u32,
    pub value: f32,
}

impl Node {
    pub const fn leaf(value: f32) -> Self {
        Self {
            feature: LEAF,
            threshold: 0.0,
            left: 0,
            value,
        }
    }

    pub const fn is_leaf(&self) -> bool {
        self.feature == LEAF
    }
}

/// A packed node: the walk's step and the way back to a [`Node`].
trait Packed: Copy {
    fn pack(n: &Node) -> Self;
    fn unpack(self) -> Node;
    /// The leaf's value, or the child `x` goes to.
    fn step(self, x: &[f32]) -> ControlFlow<f32, usize>;
}

/// Features of a narrow node: 0..=254; 255 marks a leaf.
const NARROW_LEAF: u32 = 0xFF;
/// Narrow nodes' child indices are 24 bits.
const NARROW_MAX_NODES: usize = 1 << 24;

/// 8 bytes: `key` is the threshold or the leaf's value; `link` is `left << 8 | feature`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Narrow {
    key: f32,
    link: u32,
}

impl Packed for Narrow {
    #[inline]
    fn pack(n: &Node) -> Self {
        if n.is_leaf() {
            Self {
                key: n.value,
                link: NARROW_LEAF,
            }
        } else {
            Self {
                key: n.threshold,
                link: n.left << 8 | n.feature,
            }
        }
    }

    #[inline]
    fn unpack(self) -> Node {
        let feature = self.link & 0xFF;
        if feature == NARROW_LEAF {
            Node::leaf(self.key)
        } else {
            Node {
                feature,
                threshold: self.key,
                left: self.link >> 8,
                value: 0.0,
            }
        }
    }

    #[inline(always)]
    fn step(self, x: &[f32]) -> ControlFlow<f32, usize> {
        let feature = (self.link & 0xFF) as usize;
        if feature == NARROW_LEAF as usize {
            return ControlFlow::Break(self.key);
        }
        ControlFlow::Continue((self.link >> 8) as usize + usize::from(x[feature] > self.key))
    }
}

/// 12 bytes, for trees the narrow form cannot hold.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Wide {
    key: f32,
    left: u32,
    feature: u32,
}

impl Packed for Wide {
    #[inline]
    fn pack(n: &Node) -> Self {
        if n.is_leaf() {
            Self {
                key: n.value,
                left: 0,
                feature: LEAF,
            }
        } else {
            Self {
                key: n.threshold,
                left: n.left,
                feature: n.feature,
            }
        }
    }

    #[inline]
    fn unpack(self) -> Node {
        if self.feature == LEAF {
            Node::leaf(self.key)
        } else {
            Node {
                feature: self.feature,
                threshold: self.key,
                left: self.left,
                value: 0.0,
            }
        }
    }

    #[inline(always)]
    fn step(self, x: &[f32]) -> ControlFlow<f32, usize> {
        if self.feature == LEAF {
            return ControlFlow::Break(self.key);
        }
        ControlFlow::Continue(self.left as usize + usize::from(x[self.feature as usize] > self.key))
    }
}

/// Nodes per 64-byte cache line in the narrow form.
const LINE_NODES: usize = 8;
/// Sibling pairs per line: a relaid block holds at most this many.
const LINE_PAIRS: usize = LINE_NODES / 2;

/// What fills the slots no node takes: an unreachable leaf.
const EMPTY: Narrow = Narrow {
    key: 0.0,
    link: NARROW_LEAF,
};
/// `origin` of a slot pair that holds no nodes.
const NO_ORIGIN: u32 = u32::MAX;

/// Narrow nodes in walk order (see [`Tree::relaid`]), a split's `left` a walk
/// position. The root is at `root`, where a 64-byte line begins (the array has up to
/// seven spare nodes in front to find one), and the slot after it is padding, so
/// every sibling pair starts at an even offset from a line and a line holds four
/// whole pairs. A clone may land elsewhere in memory and lose that alignment: it
/// walks the same, only a little slower.
#[derive(Debug, Clone)]
struct Blocked {
    nodes: Box<[Narrow]>,
    root: usize,
    /// The nodes of the original numbering.
    len: usize,
    /// For each slot pair `p` (positions `root + 2p`, `root + 2p + 1`), the original
    /// index of its first node (`NO_ORIGIN` when empty); pair 0 is the root and the
    /// padding.
    origin: Box<[u32]>,
    /// Each original node's walk position, built on the first index-based read:
    /// serving never needs it, and it would cost 4 bytes a node.
    position: OnceLock<Box<[u32]>>,
}

impl Blocked {
    /// The walk position of original node `i`. Panics if `i` is out of bounds.
    fn position(&self, i: usize) -> usize {
        let position = self.position.get_or_init(|| {
            let mut at = vec![0u32; self.len];
            at[0] = self.root as u32;
            for (p, &o) in self.origin.iter().enumerate().skip(1) {
                if o != NO_ORIGIN {
                    at[o as usize] = (self.root + 2 * p) as u32;
                    at[o as usize + 1] = (self.root + 2 * p + 1) as u32;
                }
            }
            at.into_boxed_slice()
        });
        position[i] as usize
    }

    /// The original index of the node at walk position `q`, if one is there.
    fn original(&self, q: usize) -> Option<usize> {
        let r = q.checked_sub(self.root)?;
        match (r, *self.origin.get(r / 2)?) {
            (0, _) => Some(0),
            (1, _) | (_, NO_ORIGIN) => None,
            (_, o) => Some(o as usize + r % 2),
        }
    }

    /// Node `i` of the original numbering, its child index translated back.
    fn get(&self, i: usize) -> Node {
        let mut n = self.nodes[self.position(i)].unpack();
        if !n.is_leaf() {
            n.left = self.origin[(n.left as usize - self.root) / 2];
        }
        n
    }

    /// Relays a tree's narrow nodes in blocks of up to [`LINE_PAIRS`] sibling pairs:
    /// a block is a pair and, greedily, the pairs below it that the most training
    /// weight reached (by `cover`; shallowest first without one). A block's leftover
    /// candidates start blocks of their own, heaviest first, so the likeliest path
    /// also runs through neighbouring lines. Blocks are packed into the line with the
    /// fewest free slots that takes them, so small blocks fill gaps and the tree
    /// grows by a few slots at most.
    ///
    /// `None` (keep the tree as it is) unless every node is reached exactly once from
    /// the root through children that point forward and in bounds: what a grown tree
    /// is. Anything else is left for [`Tree::validate`] to report.
    fn relay(plain: &[Narrow], cover: &Cover) -> Option<Self> {
        let n = plain.len();
        let left_of = |m: usize| -> Option<Option<usize>> {
            let node = plain[m];
            if node.link == NARROW_LEAF {
                return Some(None);
            }
            let left = (node.link >> 8) as usize;
            (left > m && left + 1 < n).then_some(Some(left))
        };
        // A unit is the root alone (0) or the sibling pair starting at its index.
        let members = |u: usize| if u == 0 { 0..1 } else { u..u + 2 };
        let weight = |m: usize, depth: usize| match cover {
            Cover::None => -(depth as f64),
            _ => cover.get(m),
        };
        let children = |u: usize, depth: usize, into: &mut Vec<(f64, usize, usize)>| {
            for m in members(u) {
                if let Some(left) = left_of(m)? {
                    into.push((weight(m, depth), left, depth + 1));
                }
            }
            Some(())
        };

        let mut position = vec![u32::MAX; n];
        let mut origin: Vec<u32> = Vec::with_capacity(n / 2 + LINE_PAIRS);
        // Lines by free pair slots (1 to 3); index 0 unused.
        let mut free: [Vec<usize>; LINE_PAIRS] = Default::default();
        let mut roots = vec![(0usize, 0usize)];
        let mut block = Vec::with_capacity(LINE_PAIRS);
        let mut candidates = Vec::new();
        while let Some((root, depth)) = roots.pop() {
            block.clear();
            candidates.clear();
            block.push(root);
            children(root, depth, &mut candidates)?;
            while block.len() < LINE_PAIRS && !candidates.is_empty() {
                let mut best = 0;
                for (k, c) in candidates.iter().enumerate() {
                    if c.0 > candidates[best].0 {
                        best = k;
                    }
                }
                let (_, unit, d) = candidates.remove(best);
                block.push(unit);
                children(unit, d, &mut candidates)?;
            }
            // Lightest pushed first, so the heaviest is the next block laid out.
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
            roots.extend(candidates.iter().map(|&(_, unit, d)| (unit, d)));

            let size = block.len();
            let (line, first) = match (size..LINE_PAIRS).find_map(|f| free[f].pop().map(|l| (l, f)))
            {
                Some((line, f)) => {
                    if f > size {
                        free[f - size].push(line);
                    }
                    (line, LINE_PAIRS - f)
                }
                None => {
                    let line = origin.len() / LINE_PAIRS;
                    origin.extend([NO_ORIGIN; LINE_PAIRS]);
                    if size < LINE_PAIRS {
                        free[LINE_PAIRS - size].push(line);
                    }
                    (line, 0)
                }
            };
            for (k, &unit) in block.iter().enumerate() {
                let pair = line * LINE_PAIRS + first + k;
                origin[pair] = unit as u32;
                for (j, m) in members(unit).enumerate() {
                    if position[m] != u32::MAX {
                        return None;
                    }
                    position[m] = (2 * pair + j) as u32;
                }
            }
        }
        let len = origin.len() * 2 + LINE_NODES - 1;
        if position.contains(&u32::MAX) || len > NARROW_MAX_NODES {
            return None;
        }
        let mut nodes = vec![EMPTY; len].into_boxed_slice();
        let line = LINE_NODES * std::mem::size_of::<Narrow>();
        let root = (line - nodes.as_ptr() as usize % line) % line / std::mem::size_of::<Narrow>();
        for (m, node) in plain.iter().enumerate() {
            let mut node = *node;
            if node.link != NARROW_LEAF {
                let left = root as u32 + position[(node.link >> 8) as usize];
                node.link = left << 8 | (node.link & 0xFF);
            }
            nodes[root + position[m] as usize] = node;
        }
        Some(Self {
            nodes,
            root,
            len: n,
            origin: origin.into_boxed_slice(),
            position: OnceLock::new(),
        })
    }
}

#[derive(Debug, Clone)]
enum Nodes {
    Narrow(Box<[Narrow]>),
    Wide(Box<[Wide]>),
    Blocked(Blocked),
}

impl Nodes {
    fn pack(nodes: &[Node]) -> Self {
        let (mut max_feature, mut max_left) = (0, 0);
        for n in nodes.iter().filter(|n| !n.is_leaf()) {
            max_feature = max_feature.max(n.feature);
            max_left = max_left.max(n.left);
        }
        Self::pack_from(nodes.len(), max_feature, max_left, nodes.iter().copied())
    }

    /// Packs `n` nodes, whose splits use features up to `max_feature` and left
    /// children up to `max_left`, in the 8-byte form when they fit it.
    fn pack_from(
        n: usize,
        max_feature: u32,
        max_left: u32,
        nodes: impl Iterator<Item = Node>,
    ) -> Self {
        let narrow = n <= NARROW_MAX_NODES
            && max_feature < NARROW_LEAF
            && (max_left as usize) < NARROW_MAX_NODES;
        if narrow {
            Nodes::Narrow(nodes.map(|x| Narrow::pack(&x)).collect())
        } else {
            Nodes::Wide(nodes.map(|x| Wide::pack(&x)).collect())
        }
    }

    fn len(&self) -> usize {
        match self {
            Nodes::Narrow(n) => n.len(),
            Nodes::Wide(n) => n.len(),
            Nodes::Blocked(b) => b.len,
        }
    }

    /// Node `i` of the original numbering.
    #[inline]
    fn get(&self, i: usize) -> Node {
        match self {
            Nodes::Narrow(n) => n[i].unpack(),
            Nodes::Wide(n) => n[i].unpack(),
            Nodes::Blocked(b) => b.get(i),
        }
    }

    /// The node at walk position `q`, its `left` a walk position too.
    #[inline]
    fn walk_node(&self, q: usize) -> Node {
        match self {
            Nodes::Narrow(n) => n[q].unpack(),
            Nodes::Wide(n) => n[q].unpack(),
            Nodes::Blocked(b) => b.nodes[q].unpack(),
        }
    }

    /// Every node as `(original index, node with walk-position children)`, in walk
    /// order: what checks that need no original numbering read, without building it.
    fn walk_order(&self) -> Box<dyn Iterator<Item = (usize, Node)> + '_> {
        match self {
            Nodes::Narrow(_) | Nodes::Wide(_) => {
                Box::new((0..self.len()).map(|i| (i, self.walk_node(i))))
            }
            Nodes::Blocked(b) => Box::new(
                (0..b.nodes.len()).filter_map(|q| b.original(q).map(|i| (i, b.nodes[q].unpack()))),
            ),
        }
    }
}

impl Default for Nodes {
    fn default() -> Self {
        Nodes::Narrow(Box::default())
    }
}

#[inline]
fn walk<P: Packed>(nodes: &[P], root: usize, x: &[f32]) -> f32 {
    let mut i = root;
    loop {
        match nodes[i].step(x) {
            ControlFlow::Break(value) => return value,
            ControlFlow::Continue(next) => i = next,
        }
    }
}

/// Rows walked through one tree together by [`Tree::predict_rows`].
const ROW_WALKS: usize = 16;

/// The leaf of each row of `rows` (row-major, `nf` features a row) into `out`.
///
/// A walk down a deep tree is a chain of dependent loads that mostly miss the cache,
/// so `ROW_WALKS` rows walk at once and their misses overlap. A row that reaches its
/// leaf hands its place to the next row, so deep and shallow paths keep every place
/// busy until the rows run out.
fn walk_rows<P: Packed>(nodes: &[P], root: usize, rows: &[f32], nf: usize, out: &mut [f32]) {
    let n = out.len();
    let mut row = [0usize; ROW_WALKS];
    let mut at = [root; ROW_WALKS];
    let mut live = ROW_WALKS.min(n);
    for (k, r) in row[..live].iter_mut().enumerate() {
        *r = k;
    }
    let mut next = live;
    while live > 0 {
        let mut k = 0;
        while k < live {
            let x = &rows[row[k] * nf..row[k] * nf + nf];
            match nodes[at[k]].step(x) {
                ControlFlow::Continue(i) => {
                    at[k] = i;
                    k += 1;
                }
                ControlFlow::Break(value) => {
                    out[row[k]] = value;
                    if next < n {
                        row[k] = next;
                        at[k] = root;
                        next += 1;
                        k += 1;
                    } else {
                        // The last place takes this one's; it is stepped next.
                        live -= 1;
                        row[k] = row[live];
                        at[k] = at[live];
                    }
                }
            }
        }
    }
}

/// Trees walked together by one row at most: enough independent load chains to keep
/// the core's outstanding misses busy (a deep ensemble of ten to sixteen trees walks
/// as one group), and the group's state stays a few cache lines of stack.
pub(crate) const WALKS: usize = 16;

/// The leaf value each tree of `group` (at most [`WALKS`] trees) gives row `x`, into
/// `leaves[k]`, the trees walked in lockstep (see `ensemble::sum_trees`).
pub(crate) fn lockstep_leaves(group: &[Tree], x: &[f32], leaves: &mut [f32; WALKS]) {
    debug_assert!(group.len() <= WALKS);
    let mut narrow: [(&[Narrow], usize); WALKS] = [(&[], 0); WALKS];
    let all_narrow = group.iter().zip(&mut narrow).all(|(t, n)| match &t.nodes {
        Nodes::Narrow(nodes) => {
            *n = (nodes, 0);
            true
        }
        Nodes::Blocked(b) => {
            *n = (&b.nodes, b.root);
            true
        }
        Nodes::Wide(_) => false,
    });
    if all_narrow {
        return lockstep_narrow(&narrow, group.len(), x, leaves);
    }
    let mut at = [0usize; WALKS];
    for (a, t) in at.iter_mut().zip(group) {
        *a = t.root();
    }
    // Bit k set while tree k of the group has not reached its leaf.
    let mut walking: u32 = (1 << group.len()) - 1;
    while walking != 0 {
        // Only the walks still going: trees of one group end at different depths,
        // and a test per finished tree per step would be a branch that mispredicts.
        let mut left = walking;
        while left != 0 {
            let k = left.trailing_zeros() as usize;
            left &= left - 1;
            match group[k].step(at[k], x) {
                ControlFlow::Continue(next) => at[k] = next,
                ControlFlow::Break(value) => {
                    leaves[k] = value;
                    walking &= !(1 << k);
                }
            }
        }
    }
}

/// A narrow node as one word, `key` in the low half and `link` in the high one.
#[inline(always)]
fn word(n: Narrow) -> u64 {
    u64::from(n.key.to_bits()) | u64::from(n.link) << 32
}

/// [`lockstep_leaves`] for trees in the 8-byte form, the serving path's walk. A walk
/// of a deep tree is one long chain of dependent steps, and the deepest of the group
/// sets the time, so each step is kept short: both children are loaded as soon as
/// the node is known, while its feature is still being read and compared, and the
/// comparison then only picks one of two words already in registers (a mask, not a
/// branch, which would mispredict half the time).
fn lockstep_narrow(
    trees: &[(&[Narrow], usize); WALKS],
    n: usize,
    x: &[f32],
    leaves: &mut [f32; WALKS],
) {
    let mut at = [0u64; WALKS];
    for (a, (nodes, root)) in at.iter_mut().zip(&trees[..n]) {
        *a = word(nodes[*root]);
    }
    let mut walking: u32 = (1 << n) - 1;
    while walking != 0 {
        let mut left = walking;
        while left != 0 {
            let k = left.trailing_zeros() as usize % WALKS;
            left &= left - 1;
            let node = at[k];
            let (key, link) = (f32::from_bits(node as u32), (node >> 32) as u32);
            let feature = (link & 0xFF) as usize;
            if feature == NARROW_LEAF as usize {
                leaves[k] = key;
                walking &= !(1 << k);
                continue;
            }
            let child = (link >> 8) as usize;
            let nodes = trees[k].0;
            let (l, r) = (word(nodes[child]), word(nodes[child + 1]));
            let right = u64::from(x[feature] > key).wrapping_neg();
            at[k] = (l & !right) | (r & right);
        }
    }
}

/// Each node's cover, exactly as training computed it.
#[derive(Debug, Clone, PartialEq, Default)]
enum Cover {
    /// Trees of artifacts written before explanations existed.
    #[default]
    None,
    /// Whole counts, the common case: half the bytes of `f64`.
    Counts(Box<[u32]>),
    Weights(Box<[f64]>),
}

impl Cover {
    fn new(values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Cover::None;
        }
        let counts = values
            .iter()
            .all(|&c| c.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&c));
        if counts {
            Cover::Counts(values.iter().map(|&c| c as u32).collect())
        } else {
            Cover::Weights(values.into_boxed_slice())
        }
    }

    fn len(&self) -> usize {
        match self {
            Cover::None => 0,
            Cover::Counts(c) => c.len(),
            Cover::Weights(c) => c.len(),
        }
    }

    #[inline]
    fn get(&self, i: usize) -> f64 {
        match self {
            Cover::None => f64::NAN,
            Cover::Counts(c) => f64::from(c[i]),
            Cover::Weights(c) => c[i],
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: Nodes,
    /// In the original numbering, whatever the nodes' layout.
    cover: Cover,
}

/// Trees are equal when they have the same nodes and covers in the original
/// numbering, whether or not either is relaid.
impl PartialEq for Tree {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.cover == other.cover && self.nodes().eq(other.nodes())
    }
}

impl Tree {
    /// A tree of `nodes` with each node's `cover` (the bootstrap-weighted row count
    /// for classification trees, the row count for boosting's), indexed like `nodes`;
    /// `cover` may be empty (a tree that predicts but cannot be explained).
    pub fn new(nodes: Vec<Node>, cover: Vec<f64>) -> Self {
        Self {
            nodes: Nodes::pack(&nodes),
            cover: Cover::new(cover),
        }
    }

    /// A tree without cover (it predicts, but cannot be explained).
    pub fn from_nodes(nodes: Vec<Node>) -> Self {
        Self::new(nodes, Vec::new())
    }

    /// The same tree with its nodes stored for the one-row walk: each sibling pair
    /// shares a 64-byte line with up to three pairs below it, the ones most training
    /// weight went to, so a walk touches about half the lines of the grown order.
    /// Every index-based method ([`Tree::node`], [`Tree::cover`], [`Tree::nodes`], the
    /// written bytes) answers exactly as before; only the first such read of a relaid
    /// tree builds a map of 4 bytes a node. Trees that are not in the 8-byte form, or
    /// not a proper tree (see [`Tree::validate`]), are returned unchanged.
    pub fn relaid(mut self) -> Self {
        if let Nodes::Narrow(plain) = &self.nodes
            && let Some(blocked) = Blocked::relay(plain, &self.cover)
        {
            self.nodes = Nodes::Blocked(blocked);
        }
        self
    }

    /// Whether the nodes are stored in the walk's blocks (see [`Tree::relaid`]).
    pub fn is_relaid(&self) -> bool {
        matches!(self.nodes, Nodes::Blocked(_))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Node `i`, unpacked. Panics if `i` is out of bounds, like a slice.
    #[inline]
    pub fn node(&self, i: usize) -> Node {
        self.nodes.get(i)
    }

    /// Every node in index order, unpacked.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = Node> + '_ {
        (0..self.len()).map(|i| self.node(i))
    }

    pub fn has_cover(&self) -> bool {
        !matches!(self.cover, Cover::None)
    }

    /// The cover of node `i`; NaN for a tree without cover (see [`Tree::has_cover`]).
    #[inline]
    pub fn cover(&self, i: usize) -> f64 {
        self.cover.get(i)
    }

    /// Every node's cover in index order (empty without cover).
    pub fn cover_values(&self) -> Vec<f64> {
        (0..self.cover.len()).map(|i| self.cover(i)).collect()
    }

    /// The same tree with its cover dropped, as a format-1 artifact holds it.
    pub fn without_cover(mut self) -> Self {
        self.cover = Cover::None;
        self
    }

    /// Multiplies every leaf value by `factor` (boosting's learning rate).
    pub fn scale_leaves(&mut self, factor: f32) {
        match &mut self.nodes {
            Nodes::Narrow(nodes) => {
                for n in nodes.iter_mut().filter(|n| n.link == NARROW_LEAF) {
                    n.key *= factor;
                }
            }
            Nodes::Wide(nodes) => {
                for n in nodes.iter_mut().filter(|n| n.feature == LEAF) {
                    n.key *= factor;
                }
            }
            // Empty slots are leaves of 0, which scaling keeps.
            Nodes::Blocked(b) => {
                for n in b.nodes.iter_mut() {
                    if n.link == NARROW_LEAF {
                        n.key *= factor;
                    }
                }
            }
        }
    }

    /// Whether the tree is held in the 8-byte node form (the 12-byte one otherwise).
    pub fn is_narrow(&self) -> bool {
        matches!(self.nodes, Nodes::Narrow(_) | Nodes::Blocked(_))
    }

    #[inline]
    pub fn predict(&self, x: &[f32]) -> f32 {
        match &self.nodes {
            Nodes::Narrow(nodes) => walk(nodes, 0, x),
            Nodes::Wide(nodes) => walk(nodes, 0, x),
            Nodes::Blocked(b) => walk(&b.nodes, b.root, x),
        }
    }

    /// The leaf value of each row of `rows` (row-major, `nf` features a row) into
    /// `out`, one per row: [`Tree::predict`] for many rows, with their walks overlapped.
    pub fn predict_rows(&self, rows: &[f32], nf: usize, out: &mut [f32]) {
        debug_assert_eq!(rows.len(), out.len() * nf);
        match &self.nodes {
            Nodes::Narrow(nodes) => walk_rows(nodes, 0, rows, nf, out),
            Nodes::Wide(nodes) => walk_rows(nodes, 0, rows, nf, out),
            Nodes::Blocked(b) => walk_rows(&b.nodes, b.root, rows, nf, out),
        }
    }

    /// One step of a walk from node `i`: the leaf's value, or the next node. For
    /// walking several trees in lockstep (see `ensemble::sum_trees`).
    #[inline(always)]
    pub(crate) fn step(&self, i: usize, x: &[f32]) -> ControlFlow<f32, usize> {
        match &self.nodes {
            Nodes::Narrow(nodes) => nodes[i].step(x),
            Nodes::Wide(nodes) => nodes[i].step(x),
            Nodes::Blocked(b) => b.nodes[i].step(x),
        }
    }

    /// Where a walk starts (see [`Tree::walk_node`]).
    #[inline]
    pub(crate) fn root(&self) -> usize {
        match &self.nodes {
            Nodes::Blocked(b) => b.root,
            _ => 0,
        }
    }

    /// The node at walk position `q` (the root is at [`Tree::root`]), with its `left` a walk
    /// position: for code that walks the tree from the root and needs no original
    /// index, so a relaid tree builds no index map.
    #[inline]
    pub(crate) fn walk_node(&self, q: usize) -> Node {
        self.nodes.walk_node(q)
    }

    /// The largest feature a split uses, if any split does.
    pub(crate) fn max_split_feature(&self) -> Option<u32> {
        self.nodes
            .walk_order()
            .filter(|(_, n)| !n.is_leaf())
            .map(|(_, n)| n.feature)
            .max()
    }

    pub fn n_leaves(&self) -> usize {
        self.nodes.walk_order().filter(|(_, n)| n.is_leaf()).count()
    }

    /// The longest root-to-leaf path, in splits. Iterative, so a long chain cannot
    /// exhaust the stack.
    pub fn depth(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut deepest = 0;
        let mut stack = vec![(self.root(), 0usize)];
        while let Some((i, d)) = stack.pop() {
            deepest = deepest.max(d);
            let n = self.walk_node(i);
            if !n.is_leaf() {
                stack.push((n.left as usize, d + 1));
                stack.push((n.left as usize + 1, d + 1));
            }
        }
        deepest
    }

    /// Checks what inference relies on, so a damaged artifact is refused at load
    /// instead of panicking or looping later: children point forward and in bounds,
    /// features exist, numbers are finite.
    pub fn validate(&self, n_features: usize) -> Result<(), String> {
        if self.is_empty() {
            return Err("a tree has no nodes".into());
        }
        // A relaid tree was checked to be a proper tree when it was relaid (see
        // `Blocked::relay`), so only its numbers are left to check here. Its nodes
        // are read in walk order, and the fault reported is the one with the lowest
        // original index, as for a tree in the grown order.
        let relaid = self.is_relaid();
        let mut first: Option<(usize, String)> = None;
        for (i, n) in self.nodes.walk_order() {
            if first.as_ref().is_some_and(|(f, _)| *f < i) {
                continue;
            }
            let fault = if n.is_leaf() {
                (!n.value.is_finite()).then(|| format!("node {i} has a non-finite leaf value"))
            } else if n.feature as usize >= n_features {
                Some(format!(
                    "node {i} splits on feature {} of {n_features}",
                    n.feature
                ))
            } else if n.threshold.is_nan() {
                Some(format!("node {i} has a NaN threshold"))
            } else {
                let left = n.left as usize;
                (!relaid && (left <= i || left + 1 >= self.len()))
                    .then(|| format!("node {i} has children out of order or out of bounds"))
            };
            if let Some(fault) = fault {
                if !relaid {
                    return Err(fault);
                }
                first = Some((i, fault));
            }
        }
        if let Some((_, fault)) = first {
            return Err(fault);
        }
        self.validate_cover()
    }

    /// Explanations divide by a split's cover and weigh children by theirs.
    fn validate_cover(&self) -> Result<(), String> {
        if !self.has_cover() {
            return Ok(());
        }
        if self.cover.len() != self.len() {
            return Err(format!(
                "the tree has {} nodes but {} cover values",
                self.len(),
                self.cover.len()
            ));
        }
        for i in 0..self.cover.len() {
            let c = self.cover(i);
            // Training never makes an empty node (a leaf holds at least one row).
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("node {i} has an invalid cover {c}"));
            }
        }
        Ok(())
    }
}

/// Trees in format-1 and format-2 artifacts: columns of JSON numbers, much smaller
/// than one JSON object per node (format 3 stores them in binary, see
/// [`crate::artifact`]).
#[derive(Serialize, Deserialize)]
struct TreeColumns {
    feature: Vec<u32>,
    threshold: Vec<f32>,
    left: Vec<u32>,
    value: Vec<f32>,
    /// Absent in format-1 artifacts; left out when empty so such a model, loaded and
    /// written again, keeps its bytes (and so its digest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cover: Vec<f64>,
}

impl Serialize for Tree {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TreeColumns {
            feature: self.nodes().map(|n| n.feature).collect(),
            threshold: self.nodes().map(|n| n.threshold).collect(),
            left: self.nodes().map(|n| n.left).collect(),
            value: self.nodes().map(|n| n.value).collect(),
            cover: self.cover_values(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let c = TreeColumns::deserialize(d)?;
        let n = c.feature.len();
        if c.threshold.len() != n || c.left.len() != n || c.value.len() != n {
            return Err(serde::de::Error::custom("tree columns differ in length"));
        }
        let nodes = (0..n)
            .map(|i| Node {
                feature: c.feature[i],
                threshold: c.threshold[i],
                left: c.left[i],
                value: c.value[i],
            })
            .collect();
        Ok(Tree::new(nodes, c.cover).relaid())
    }
}

/// Why a tree's binary columns could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("tree {tree}: the section ends {missing} bytes short of its {column}")]
    Short {
        tree: usize,
        column: &'static str,
        missing: usize,
    },
    #[error("tree {tree}: the {column} column's width is {width} bytes, not 1, 2 or 4")]
    Width {
        tree: usize,
        column: &'static str,
        width: u8,
    },
    #[error("tree {tree}: the cover column's width is {width} bytes, not 0, 4 or 8")]
    CoverWidth { tree: usize, width: u8 },
    #[error("tree {tree}: its reserved header byte is {value}, not 0")]
    Reserved { tree: usize, value: u8 },
}

/// A little-endian reader over a byte slice that names what it was reading when the
/// bytes run out.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next `len` bytes, or how many are missing.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], usize> {
        if len > self.bytes.len() {
            return Err(len - self.bytes.len());
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The smallest of 1, 2 or 4 bytes that holds every value up to `max`, and above it
/// the all-ones leaf marker of that width when `marker` is set.
fn width_for(max: u32, marker: bool) -> u8 {
    let fits = |bits: u32| {
        let top = if bits == 32 {
            u32::MAX
        } else {
            (1u32 << bits) - 1
        };
        if marker { max < top } else { max <= top }
    };
    if fits(8) {
        1
    } else if fits(16) {
        2
    } else {
        4
    }
}

fn read_uint(b: &[u8], width: u8) -> u32 {
    match width {
        1 => u32::from(b[0]),
        2 => u32::from(u16::from_le_bytes([b[0], b[1]])),
        _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    }
}

/// Writes `values` as `width`-byte little-endian integers, through a small buffer so
/// a writer sees a few large writes rather than one per value.
fn write_columns<W: std::io::Write>(
    w: &mut W,
    values: impl Iterator<Item = [u8; 8]>,
    width: usize,
) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    let mut at = 0;
    for v in values {
        if at + width > buf.len() {
            w.write_all(&buf[..at])?;
            at = 0;
        }
        buf[at..at + width].copy_from_slice(&v[..width]);
        at += width;
    }
    w.write_all(&buf[..at])
}

fn le(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b
}

/// Per-tree binary layout (format 3), little-endian throughout:
///
/// ```text
/// u32 nodes
/// u8  feature width (1, 2, 4)    u8 left width (1, 2, 4)
/// u8  cover width (0: none, 4: u32 counts, 8: f64)    u8 reserved (0)
/// nodes  × feature width   each node's feature; all ones of the width: a leaf
/// nodes  × 4               each node's f32: a split's threshold, a leaf's value
/// splits × left width      each split's left child, in node order
/// nodes  × cover width     each node's cover
/// ```
impl Tree {
    fn widths(&self) -> (u8, u8, u8) {
        let (mut max_feature, mut max_left) = (0, 0);
        for n in self.nodes().filter(|n| !n.is_leaf()) {
            max_feature = max_feature.max(n.feature);
            max_left = max_left.max(n.left);
        }
        let cover = match self.cover {
            Cover::None => 0,
            Cover::Counts(_) => 4,
            Cover::Weights(_) => 8,
        };
        (
            width_for(max_feature, true),
            width_for(max_left, false),
            cover,
        )
    }

    fn n_splits(&self) -> usize {
        self.len() - self.n_leaves()
    }

    /// The bytes [`Tree::write_binary`] writes, without writing them.
    pub(crate) fn binary_len(&self) -> usize {
        let (fw, lw, cw) = self.widths();
        8 + self.len() * (usize::from(fw) + 4 + usize::from(cw)) + self.n_splits() * usize::from(lw)
    }

    pub(crate) fn write_binary<W: std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        let (fw, lw, cw) = self.widths();
        let n = u32::try_from(self.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a tree of 2^32 nodes or more",
            )
        })?;
        w.write_all(&n.to_le_bytes())?;
        w.write_all(&[fw, lw, cw, 0])?;
        let leaf_marker = match fw {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => LEAF,
        };
        write_columns(
            w,
            self.nodes()
                .map(|n| le(if n.is_leaf() { leaf_marker } else { n.feature })),
            usize::from(fw),
        )?;
        write_columns(
            w,
            self.nodes()
                .map(|n| le(if n.is_leaf() { n.value } else { n.threshold }.to_bits())),
            4,
        )?;
        write_columns(
            w,
            self.nodes().filter(|n| !n.is_leaf()).map(|n| le(n.left)),
            usize::from(lw),
        )?;
        match &self.cover {
            Cover::None => Ok(()),
            Cover::Counts(c) => write_columns(w, c.iter().map(|&v| le(v)), 4),
            Cover::Weights(c) => write_columns(w, c.iter().map(|v| v.to_bits().to_le_bytes()), 8),
        }
    }

    /// Reads tree number `tree` from `r`. Only the layout is checked here; what the
    /// numbers mean (children in bounds, features that exist) is [`Tree::validate`]'s.
    pub(crate) fn read_binary(r: &mut Cursor<'_>, tree: usize) -> Result<Self, DecodeError> {
        let short = |column| {
            move |missing| DecodeError::Short {
                tree,
                column,
                missing,
            }
        };
        let n = r.u32().map_err(short("node count"))? as usize;
        let head = r.take(4).map_err(short("column widths"))?;
        let (fw, lw, cw) = (head[0], head[1], head[2]);
        for (column, width) in [("feature", fw), ("left child", lw)] {
            if !matches!(width, 1 | 2 | 4) {
                return Err(DecodeError::Width {
                    tree,
                    column,
                    width,
                });
            }
        }
        if !matches!(cw, 0 | 4 | 8) {
            return Err(DecodeError::CoverWidth { tree, width: cw });
        }
        if head[3] != 0 {
            return Err(DecodeError::Reserved {
                tree,
                value: head[3],
            });
        }
        // Lengths are checked against the bytes present before anything is allocated,
        // so a damaged count cannot ask for gigabytes.
        let features = r
            .take(n.saturating_mul(usize::from(fw)))
            .map_err(short("feature column"))?;
        let keys = r
            .take(n.saturating_mul(4))
            .map_err(short("threshold/value column"))?;
        let leaf_marker = match fw {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => LEAF,
        };
        let feature_at = |i: usize| {
            let f = read_uint(&features[i * usize::from(fw)..], fw);
            if f == leaf_marker { LEAF } else { f }
        };
        // One pass over the features finds the splits and whether the tree fits the
        // narrow form; the nodes are then packed straight from the columns, with no
        // unpacked copy of a tree that may be millions of nodes.
        let (mut n_splits, mut max_feature) = (0usize, 0u32);
        for i in 0..n {
            let f = feature_at(i);
            if f != LEAF {
                n_splits += 1;
                max_feature = max_feature.max(f);
            }
        }
        let lefts = r
            .take(n_splits * usize::from(lw))
            .map_err(short("left child column"))?;
        let covers = r
            .take(n.saturating_mul(usize::from(cw)))
            .map_err(short("cover column"))?;
        let left_at = |split: usize| read_uint(&lefts[split * usize::from(lw)..], lw);
        let max_left = (0..n_splits).map(left_at).max().unwrap_or(0);
        let mut split = 0;
        let node_at = |i: usize| {
            let key = f32::from_bits(read_uint(&keys[i * 4..], 4));
            let feature = feature_at(i);
            if feature == LEAF {
                return Node::leaf(key);
            }
            split += 1;
            Node {
                feature,
                threshold: key,
                left: left_at(split - 1),
                value: 0.0,
            }
        };
        let nodes = Nodes::pack_from(n, max_feature, max_left, (0..n).map(node_at));
        let cover = match cw {
            4 => Cover::Counts(covers.chunks_exact(4).map(|b| read_uint(b, 4)).collect()),
            8 => Cover::Weights(
                covers
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ),
            _ => Cover::None,
        };
        Ok(Tree { nodes, cover }.relaid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(feature: u32, left_pad: usize) -> Vec<Node> {
        // A root split whose children sit after `left_pad` unreachable leaves, so the
        // child index needs a wider column.
        let left = 1 + left_pad as u32;
        let mut nodes = vec![Node {
            feature,
            threshold: 0.25,
            left,
            value: 0.0,
        }];
        nodes.extend((0..left_pad).map(|i| Node::leaf(i as f32)));
        nodes.extend([Node::leaf(-1.5), Node::leaf(2.0)]);
        nodes
    }

    fn round_trip(t: &Tree) -> Tree {
        let mut bytes = Vec::new();
        t.write_binary(&mut bytes).unwrap();
        assert_eq!(bytes.len(), t.binary_len());
        let mut r = Cursor::new(&bytes);
        let back = Tree::read_binary(&mut r, 0).unwrap();
        assert_eq!(r.remaining(), 0);
        back
    }

    #[test]
    fn nodes_pack_to_eight_bytes_and_unpack_unchanged() {
        assert_eq!(std::mem::size_of::<Narrow>(), 8);
        assert_eq!(std::mem::size_of::<Wide>(), 12);
        let nodes = sample(3, 0);
        let t = Tree::new(nodes.clone(), vec![4.0, 1.0, 3.0]);
        assert!(t.is_narrow());
        assert_eq!(t.nodes().collect::<Vec<_>>(), nodes);
        assert_eq!(t.cover_values(), vec![4.0, 1.0, 3.0]);
        assert_eq!(t.predict(&[0.0, 0.0, 0.0, 0.2]), -1.5);
        assert_eq!(t.predict(&[0.0, 0.0, 0.0, 0.3]), 2.0);
    }

    #[test]
    fn a_wide_feature_or_many_nodes_keep_the_wide_form() {
        let nodes = sample(300, 0);
        let t = Tree::from_nodes(nodes.clone());
        assert!(!t.is_narrow());
        assert_eq!(t.nodes().collect::<Vec<_>>(), nodes);
        let mut x = vec![0.0; 301];
        x[300] = 1.0;
        assert_eq!(t.predict(&x), 2.0);
        assert_eq!(round_trip(&t), t);
    }

    #[test]
    fn binary_columns_round_trip_at_every_width() {
        for (feature, pad, cover) in [
            (0, 0, vec![]),
            (254, 300, vec![1.0; 303]),
            (255, 70_000, vec![2.5; 70_003]),
            (70_000, 5, vec![7.0; 8]),
        ] {
            let t = Tree::new(sample(feature, pad), cover.clone());
            let back = round_trip(&t);
            assert_eq!(back, t, "feature {feature}, pad {pad}");
            assert_eq!(back.cover_values(), cover);
        }
    }

    #[test]
    fn the_narrow_form_is_chosen_by_the_values_not_the_column_widths() {
        // Columns wider than the values need (a writer is free to choose them) still
        // load into 8-byte nodes, the same tree as one built from the nodes.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&[2, 4, 4, 0]);
        for f in [3u16, 0xFFFF, 0xFFFF] {
            bytes.extend_from_slice(&f.to_le_bytes());
        }
        for key in [0.25f32, -1.5, 2.0] {
            bytes.extend_from_slice(&key.to_bits().to_le_bytes());
        }
        bytes.extend_from_slice(&1u32.to_le_bytes());
        for c in [4u32, 1, 3] {
            bytes.extend_from_slice(&c.to_le_bytes());
        }
        let mut r = Cursor::new(&bytes);
        let t = Tree::read_binary(&mut r, 0).unwrap();
        assert_eq!(r.remaining(), 0);
        assert!(t.is_narrow());
        assert_eq!(t, Tree::new(sample(3, 0), vec![4.0, 1.0, 3.0]));
        // And a split's feature above the narrow form's range keeps the wide one.
        bytes[8..10].copy_from_slice(&300u16.to_le_bytes());
        let t = Tree::read_binary(&mut Cursor::new(&bytes), 0).unwrap();
        assert!(!t.is_narrow());
        assert_eq!(t.node(0).feature, 300);
        assert_eq!(t.node(0).left, 1);
        assert_eq!(t.node(2), Node::leaf(2.0));
    }

    /// A tree grown as training grows one (depth-first, the right child's subtree
    /// first) with `2^depth` leaves at most, pruned pseudo-randomly so paths differ in
    /// length, and each node's cover the rows that reach it.
    fn grown(depth: usize, seed: u64) -> Tree {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut nodes = vec![Node::leaf(0.0)];
        let mut rows = vec![1e6f64];
        let mut stack = vec![(0usize, 0usize)];
        while let Some((at, d)) = stack.pop() {
            if d == depth || rows[at] < 2.0 || next() % 10 == 0 {
                nodes[at] = Node::leaf((next() % 1000) as f32 / 64.0 - 7.0);
                continue;
            }
            let left = nodes.len();
            let share = rows[at] * (0.1 + (next() % 80) as f64 / 100.0);
            let share = share.floor().max(1.0);
            nodes.extend([Node::leaf(0.0), Node::leaf(0.0)]);
            rows.extend([share, rows[at] - share]);
            nodes[at] = Node {
                feature: (next() % 5) as u32,
                threshold: (next() % 16) as f32,
                left: left as u32,
                value: 0.0,
            };
            stack.push((left, d + 1));
            stack.push((left + 1, d + 1));
        }
        Tree::new(nodes, rows)
    }

    /// The 64-byte lines a walk from the root to each leaf touches, weighed by the
    /// share of the root's cover that reaches the leaf.
    fn lines_per_walk(t: &Tree) -> f64 {
        let (base, size) = match &t.nodes {
            Nodes::Narrow(n) => (n.as_ptr() as usize, 8),
            Nodes::Blocked(b) => (b.nodes.as_ptr() as usize, 8),
            Nodes::Wide(n) => (n.as_ptr() as usize, 12),
        };
        let line = |q: usize| (base + q * size) / 64;
        let mut total = 0.0;
        let mut stack = vec![(t.root(), vec![line(t.root())])];
        while let Some((q, mut seen)) = stack.pop() {
            let n = t.walk_node(q);
            if n.is_leaf() {
                seen.sort_unstable();
                seen.dedup();
                // The leaf's cover, by walk position: covers are read by original index.
                let i = match &t.nodes {
                    Nodes::Blocked(b) => b.original(q).unwrap(),
                    _ => q,
                };
                total += seen.len() as f64 * t.cover(i) / t.cover(0);
                continue;
            }
            for c in [n.left as usize, n.left as usize + 1] {
                let mut s = seen.clone();
                s.push(line(c));
                stack.push((c, s));
            }
        }
        total
    }

    #[test]
    fn a_relaid_tree_reads_answers_and_writes_like_the_grown_one() {
        for (depth, seed) in [(0, 1), (1, 2), (3, 3), (9, 4), (16, 5), (30, 6)] {
            let t = grown(depth, seed);
            let r = t.clone().relaid();
            assert!(r.is_relaid() && r.is_narrow(), "depth {depth}");
            assert_eq!(r, t);
            // Every index-based read, in the original numbering.
            assert_eq!(r.len(), t.len());
            for i in 0..t.len() {
                assert_eq!(r.node(i), t.node(i), "depth {depth}, node {i}");
                assert_eq!(r.cover(i).to_bits(), t.cover(i).to_bits());
            }
            assert_eq!(r.cover_values(), t.cover_values());
            assert_eq!((r.depth(), r.n_leaves()), (t.depth(), t.n_leaves()));
            assert_eq!(r.max_split_feature(), t.max_split_feature());
            assert_eq!(r.validate(5), t.validate(5));
            // The same bytes, so a loaded model written again keeps its digest.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            t.write_binary(&mut a).unwrap();
            r.write_binary(&mut b).unwrap();
            assert_eq!(a, b, "depth {depth}");
            assert_eq!(r.binary_len(), t.binary_len());
            // Reading gives the relaid form, equal to both.
            let back = round_trip(&t);
            assert!(back.is_relaid());
            assert_eq!(back, t);
            // The same leaf for every row, including ties and NaN.
            let mut rows = Vec::new();
            for k in 0..400u32 {
                let row: Vec<f32> = (0..5)
                    .map(|f| match (k * 7 + f * 3) % 19 {
                        18 => f32::NAN,
                        v => v as f32 - 1.0,
                    })
                    .collect();
                assert_eq!(r.predict(&row).to_bits(), t.predict(&row).to_bits());
                rows.extend(row);
            }
            let (mut want, mut got) = (vec![0.0; 400], vec![0.0; 400]);
            t.predict_rows(&rows, 5, &mut want);
            r.predict_rows(&rows, 5, &mut got);
            assert_eq!(got, want);
            // Scaling leaves scales the same leaves.
            let (mut t2, mut r2) = (t.clone(), r.clone());
            t2.scale_leaves(0.1);
            r2.scale_leaves(0.1);
            assert_eq!(r2, t2);
        }
    }

    #[test]
    fn relaid_walks_touch_fewer_lines_and_pairs_never_straddle_one() {
        let t = grown(40, 11);
        assert!(t.len() > 2_000, "{} nodes", t.len());
        let r = t.clone().relaid();
        let Nodes::Blocked(b) = &r.nodes else {
            panic!("not relaid")
        };
        assert_eq!((b.nodes.as_ptr() as usize + 8 * b.root) % 64, 0);
        // The root's pad and empty slots cost a few nodes, no more.
        assert!(
            b.nodes.len() < t.len() + t.len() / 20 + 16,
            "{}",
            b.nodes.len()
        );
        for (_, n) in r.nodes.walk_order().filter(|(_, n)| !n.is_leaf()) {
            assert_eq!((n.left as usize - b.root) % 2, 0, "a pair at an odd offset");
        }
        let (before, after) = (lines_per_walk(&t), lines_per_walk(&r));
        assert!(
            after < 0.75 * before,
            "{before:.2} -> {after:.2} lines a walk"
        );
    }

    #[test]
    fn trees_that_are_not_proper_trees_are_not_relaid() {
        // Unreachable nodes (a writer may leave them), the wide form, and children
        // that point backwards are kept as they are, for `validate` to judge.
        assert!(!Tree::from_nodes(sample(1, 3)).relaid().is_relaid());
        assert!(!Tree::from_nodes(sample(300, 0)).relaid().is_relaid());
        let mut nodes = sample(1, 0);
        nodes.push(Node {
            feature: 0,
            threshold: 0.0,
            left: 1,
            value: 0.0,
        });
        nodes[2] = Node {
            feature: 0,
            threshold: 1.0,
            left: 1,
            value: 0.0,
        };
        let t = Tree::from_nodes(nodes).relaid();
        assert!(!t.is_relaid());
        assert!(t.validate(2).is_err());
        // Two splits sharing one pair of children.
        let shared = vec![
            Node {
                feature: 0,
                threshold: 0.0,
                left: 1,
                value: 0.0,
            },
            Node {
                feature: 0,
                threshold: 0.0,
                left: 3,
                value: 0.0,
            },
            Node {
                feature: 0,
                threshold: 0.0,
                left: 3,
                value: 0.0,
            },
            Node::leaf(1.0),
            Node::leaf(2.0),
        ];
        assert!(!Tree::from_nodes(shared).relaid().is_relaid());
    }

    #[test]
    fn a_relaid_tree_names_a_bad_node_by_its_original_index() {
        let mut nodes = vec![Node::leaf(0.0)];
        let mut at = 0;
        for d in 0..6u32 {
            let left = nodes.len() as u32;
            nodes.extend([Node::leaf(d as f32), Node::leaf(0.0)]);
            nodes[at] = Node {
                feature: d % 2,
                threshold: 0.5,
                left,
                value: 0.0,
            };
            at = left as usize + 1;
        }
        nodes[9].value = f32::INFINITY;
        let r = Tree::from_nodes(nodes.clone()).relaid();
        assert!(r.is_relaid());
        assert_eq!(
            r.validate(2),
            Err("node 9 has a non-finite leaf value".to_string())
        );
        assert_eq!(
            r.validate(1).unwrap_err(),
            Tree::from_nodes(nodes).validate(1).unwrap_err()
        );
    }

    #[test]
    fn whole_covers_are_counts_and_fractions_stay_exact() {
        let t = Tree::new(sample(1, 0), vec![3.0, 1.0, 2.0]);
        assert!(matches!(t.cover, Cover::Counts(_)));
        let t = Tree::new(sample(1, 0), vec![3.5, 1.25, 2.25]);
        assert!(matches!(t.cover, Cover::Weights(_)));
        assert_eq!(t.cover(1), 1.25);
    }

    #[test]
    fn scaling_touches_leaves_only() {
        let mut t = Tree::from_nodes(sample(2, 0));
        t.scale_leaves(0.5);
        let n: Vec<_> = t.nodes().collect();
        assert_eq!(n[0].threshold, 0.25);
        assert_eq!((n[1].value, n[2].value), (-0.75, 1.0));
    }

    #[test]
    fn damaged_columns_are_named_not_panicked_on() {
        let t = Tree::new(sample(2, 3), vec![5.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        let mut bytes = Vec::new();
        t.write_binary(&mut bytes).unwrap();
        for cut in 0..bytes.len() {
            let err = Tree::read_binary(&mut Cursor::new(&bytes[..cut]), 7).unwrap_err();
            assert!(
                matches!(err, DecodeError::Short { tree: 7, missing, .. } if missing > 0),
                "cut at {cut}: {err:?}"
            );
        }
        let mut bad = bytes.clone();
        bad[4] = 3;
        assert_eq!(
            Tree::read_binary(&mut Cursor::new(&bad), 0).unwrap_err(),
            DecodeError::Width {
                tree: 0,
                column: "feature",
                width: 3
            }
        );
        let mut bad = bytes.clone();
        bad[6] = 5;
        assert!(
            Tree::read_binary(&mut Cursor::new(&bad), 0)
                .unwrap_err()
                .to_string()
                .contains("cover column's width is 5")
        );
        // A node count far beyond the bytes present is refused before allocating.
        let mut bad = bytes;
        bad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Tree::read_binary(&mut Cursor::new(&bad), 0).unwrap_err(),
            DecodeError::Short {
                column: "feature column",
                ..
            }
        ));
    }
}
