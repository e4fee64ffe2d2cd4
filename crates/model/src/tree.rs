//! The stored form of a tree and the inference loop. Nodes sit in one array; a split's
//! two children are adjacent, so a node needs one child index and the walk is
//! `i = left + (x > threshold)`.

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
}

impl Tree {
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
        Ok(Tree { nodes })
    }
}
