//! The stored form of a tree and the inference loop. Nodes sit in one array; a split's
//! two children are adjacent, so a node needs one child index and the walk is
//! `i = left + (x > threshold)`.
//!
//! Each node's cover (the training weight that reached it) sits in its own array
//! beside the nodes: only explanations read it, and the inference walk should not
//! drag it through the cache.

use serde::{Deserialize, Serialize};

/// `feature` of a leaf.
pub const LEAF: u32 = u32::MAX;

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
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// The training weight that reached each node, indexed like `nodes`: the
    /// bootstrap-weighted row count for classification trees, the row count for
    /// boosting's. Empty for trees of artifacts written before explanations existed.
    pub cover: Vec<f64>,
}

impl Tree {
    /// A tree without cover (it predicts, but cannot be explained).
    pub fn from_nodes(nodes: Vec<Node>) -> Self {
        Self {
            nodes,
            cover: Vec::new(),
        }
    }

    pub fn has_cover(&self) -> bool {
        !self.cover.is_empty()
    }

    #[inline]
    pub fn predict(&self, x: &[f32]) -> f32 {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.feature == LEAF {
                return n.value;
            }
            i = n.left as usize + usize::from(x[n.feature as usize] > n.threshold);
        }
    }

    pub fn n_leaves(&self) -> usize {
        self.nodes.iter().filter(|n| n.feature == LEAF).count()
    }

    pub fn depth(&self) -> usize {
        fn walk(t: &Tree, i: usize) -> usize {
            let n = &t.nodes[i];
            if n.feature == LEAF {
                0
            } else {
                1 + walk(t, n.left as usize).max(walk(t, n.left as usize + 1))
            }
        }
        if self.nodes.is_empty() {
            0
        } else {
            walk(self, 0)
        }
    }

    /// Checks what inference relies on, so a damaged artifact is refused at load
    /// instead of panicking or looping later: children point forward and in bounds,
    /// features exist, numbers are finite.
    pub fn validate(&self, n_features: usize) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("a tree has no nodes".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.feature == LEAF {
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
            if left <= i || left + 1 >= self.nodes.len() {
                return Err(format!(
                    "node {i} has children out of order or out of bounds"
                ));
            }
        }
        self.validate_cover()
    }

    /// Explanations divide by a split's cover and weigh children by theirs.
    fn validate_cover(&self) -> Result<(), String> {
        if self.cover.is_empty() {
            return Ok(());
        }
        if self.cover.len() != self.nodes.len() {
            return Err(format!(
                "the tree has {} nodes but {} cover values",
                self.nodes.len(),
                self.cover.len()
            ));
        }
        for (i, &c) in self.cover.iter().enumerate() {
            // Training never makes an empty node (a leaf holds at least one row).
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("node {i} has an invalid cover {c}"));
            }
        }
        Ok(())
    }
}

/// Trees are stored as columns of numbers; much smaller than one JSON object per node.
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
            feature: self.nodes.iter().map(|n| n.feature).collect(),
            threshold: self
                .nodes
                .iter()
                .map(|n| if n.feature == LEAF { 0.0 } else { n.threshold })
                .collect(),
            left: self.nodes.iter().map(|n| n.left).collect(),
            value: self.nodes.iter().map(|n| n.value).collect(),
            cover: self.cover.clone(),
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
        Ok(Tree {
            nodes,
            cover: c.cover,
        })
    }
}
