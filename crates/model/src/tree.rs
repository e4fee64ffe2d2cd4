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

use std::ops::ControlFlow;

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

#[derive(Debug, Clone, PartialEq)]
enum Nodes {
    Narrow(Box<[Narrow]>),
    Wide(Box<[Wide]>),
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
        }
    }

    #[inline]
    fn get(&self, i: usize) -> Node {
        match self {
            Nodes::Narrow(n) => n[i].unpack(),
            Nodes::Wide(n) => n[i].unpack(),
        }
    }
}

impl Default for Nodes {
    fn default() -> Self {
        Nodes::Narrow(Box::default())
    }
}

#[inline]
fn walk<P: Packed>(nodes: &[P], x: &[f32]) -> f32 {
    let mut i = 0usize;
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
fn walk_rows<P: Packed>(nodes: &[P], rows: &[f32], nf: usize, out: &mut [f32]) {
    let n = out.len();
    let mut row = [0usize; ROW_WALKS];
    let mut at = [0usize; ROW_WALKS];
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
                        at[k] = 0;
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
    let mut narrow: [&[Narrow]; WALKS] = [&[]; WALKS];
    let all_narrow = group.iter().zip(&mut narrow).all(|(t, n)| match &t.nodes {
        Nodes::Narrow(nodes) => {
            *n = nodes;
            true
        }
        Nodes::Wide(_) => false,
    });
    if all_narrow {
        return lockstep_narrow(&narrow, group.len(), x, leaves);
    }
    let mut at = [0usize; WALKS];
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
/// of a deep tree is one long chain of dependent steps and the deepest of the group
/// sets the time, so each step is kept short: there is no dispatch on the node form,
/// both children are loaded as soon as the node is known (while its feature is still
/// being read and compared), and the comparison then only picks one of two words
/// already in registers. The pick must not become a branch (the compiler made one of
/// a plain mask): on one row repeated, as a load test sends, it is predicted and
/// looks fast, but on varied rows it mispredicts about every other step.
fn lockstep_narrow(trees: &[&[Narrow]; WALKS], n: usize, x: &[f32], leaves: &mut [f32; WALKS]) {
    let mut at = [0u64; WALKS];
    for (a, nodes) in at.iter_mut().zip(&trees[..n]) {
        *a = word(nodes[0]);
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
            let nodes = trees[k];
            let (l, r) = (word(nodes[child]), word(nodes[child + 1]));
            at[k] = std::hint::select_unpredictable(x[feature] > key, r, l);
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

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tree {
    nodes: Nodes,
    cover: Cover,
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
        }
    }

    /// Whether the tree is held in the 8-byte node form (the 12-byte one otherwise).
    pub fn is_narrow(&self) -> bool {
        matches!(self.nodes, Nodes::Narrow(_))
    }

    #[inline]
    pub fn predict(&self, x: &[f32]) -> f32 {
        match &self.nodes {
            Nodes::Narrow(nodes) => walk(nodes, x),
            Nodes::Wide(nodes) => walk(nodes, x),
        }
    }

    /// The leaf value of each row of `rows` (row-major, `nf` features a row) into
    /// `out`, one per row: [`Tree::predict`] for many rows, with their walks overlapped.
    pub fn predict_rows(&self, rows: &[f32], nf: usize, out: &mut [f32]) {
        debug_assert_eq!(rows.len(), out.len() * nf);
        match &self.nodes {
            Nodes::Narrow(nodes) => walk_rows(nodes, rows, nf, out),
            Nodes::Wide(nodes) => walk_rows(nodes, rows, nf, out),
        }
    }

    /// One step of a walk from node `i`: the leaf's value, or the next node. For
    /// walking several trees in lockstep (see [`lockstep_leaves`]).
    #[inline(always)]
    pub(crate) fn step(&self, i: usize, x: &[f32]) -> ControlFlow<f32, usize> {
        match &self.nodes {
            Nodes::Narrow(nodes) => nodes[i].step(x),
            Nodes::Wide(nodes) => nodes[i].step(x),
        }
    }

    pub fn n_leaves(&self) -> usize {
        self.nodes().filter(Node::is_leaf).count()
    }

    /// The longest root-to-leaf path, in splits. Iterative, so a long chain cannot
    /// exhaust the stack.
    pub fn depth(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut deepest = 0;
        let mut stack = vec![(0usize, 0usize)];
        while let Some((i, d)) = stack.pop() {
            deepest = deepest.max(d);
            let n = self.node(i);
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
        for (i, n) in self.nodes().enumerate() {
            if n.is_leaf() {
                if !n.value.is_finite() {
                    return Err(format!("node {i} has a non-finite leaf value"));
                }
                continue;
            }
            if n.feature as usize >= n_features {
                return Err(format!(
                    "node {i} splits on feature {} of {n_features}",
                    n.feature
                ));
            }
            if n.threshold.is_nan() {
                return Err(format!("node {i} has a NaN threshold"));
            }
            let left = n.left as usize;
            if left <= i || left + 1 >= self.len() {
                return Err(format!(
                    "node {i} has children out of order or out of bounds"
                ));
            }
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
        Ok(Tree::new(nodes, c.cover))
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
        Ok(Tree { nodes, cover })
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
