//! What a tree grows on: the rows' statistics, a classification row's code, records,
//! and the sample of rows a tree reorders as its nodes split.

use std::ops::Range;

/// What each row adds to a histogram bin.
pub(super) enum RowStats {
    /// Boosting: fixed-point gradient and hessian.
    Newton { g: Vec<i64>, h: Vec<i64> },
    /// Classification trees grown from indices (see [`Record`] for when):
    /// `weight << 1 | label`, adding `(w·y, w)`. One byte per row instead of sixteen
    /// keeps a forest worker's rows in its core's L2 cache.
    Codes(Vec<u8>),
}

/// A classification row as a forest's tree grows on it: byte `u` is the row's bin in
/// counted column `u`, the top byte its code (`weight << 1 | label`). A node's rows
/// are moved together as it splits, so counting reads one stretch of memory where
/// row indices would gather from all over the data; in a forest's deep nodes those
/// gathers were cache misses. Data with more than [`RECORD_UNITS`] counted columns is
/// grown from indices instead.
pub(super) type Record = u64;
pub(super) const RECORD_UNITS: usize = 7;
pub(crate) const CODE_SHIFT: u32 = 56;

/// The rows a tree grows on, ordered so that each node's rows are one range.
pub(super) enum Sample {
    /// Indices into the data, whose gradients or codes are in [`RowStats`].
    Rows { rows: Vec<u32>, scratch: Vec<u32> },
    /// Classification rows whole.
    Records {
        records: Vec<Record>,
        scratch: Vec<Record>,
    },
}

impl Sample {
    pub(super) fn len(&self) -> usize {
        match self {
            Sample::Rows { rows, .. } => rows.len(),
            Sample::Records { records, .. } => records.len(),
        }
    }

    /// A sample of its own holding the rows in `range`, for a subtree grown apart.
    pub(super) fn copy_range(&self, range: Range<usize>) -> Sample {
        let n = range.len();
        match self {
            Sample::Rows { rows, .. } => Sample::Rows {
                rows: rows[range].to_vec(),
                scratch: vec![0; n],
            },
            Sample::Records { records, .. } => Sample::Records {
                records: records[range].to_vec(),
                scratch: vec![0; n],
            },
        }
    }

    /// Puts a sample made by [`Sample::copy_range`] back at `start`, with the order
    /// its subtree left its rows in.
    pub(super) fn write_back(&mut self, start: usize, part: &Sample) {
        match (self, part) {
            (Sample::Rows { rows, .. }, Sample::Rows { rows: p, .. }) => {
                rows[start..start + p.len()].copy_from_slice(p);
            }
            (Sample::Records { records, .. }, Sample::Records { records: p, .. }) => {
                records[start..start + p.len()].copy_from_slice(p);
            }
            _ => unreachable!("a part is copied from a sample of its own kind"),
        }
    }
}

/// The largest row weight a classification tree keeps. A bootstrap draw gives a row
/// this weight with probability below 1e-200, so capping it changes nothing.
pub const MAX_WEIGHT: u8 = 127;

/// A classification row's code: its weight (capped at [`MAX_WEIGHT`]) and 0/1 label.
pub(crate) fn class_code(weight: u8, y: u8) -> u8 {
    weight.min(MAX_WEIGHT) << 1 | (y & 1)
}

/// `(g, h)` of a classification row from its code.
pub(super) fn count_stat(code: u8) -> (i64, i64) {
    let h = i64::from(code >> 1) << 32;
    (h * i64::from(code & 1), h)
}

/// `(g, h)` of a record, as [`count_stat`] of its code.
pub(super) fn record_stat(rec: Record) -> (i64, i64) {
    count_stat((rec >> CODE_SHIFT) as u8)
}
