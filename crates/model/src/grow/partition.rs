//! Partitions: a node's rows, as indices or records, moved left and right as it splits.

use std::ops::Range;

use super::layout::Decoder;
use super::rows::{Record, Sample};
use super::{Grower, PARALLEL_WORK};

impl Grower<'_> {
    /// Splits a node's rows (`range` of the sample) into those going left, then those
    /// going right, keeping their order; returns how many go left.
    pub(super) fn split_rows(
        &self,
        sample: &mut Sample,
        range: Range<usize>,
        feature: usize,
        bin: u8,
    ) -> usize {
        match sample {
            Sample::Rows { rows, scratch } => {
                let col = &self.data.columns[feature];
                self.partition(&mut rows[range.clone()], &mut scratch[range], |r, s| {
                    partition(r, s, col, bin)
                })
            }
            Sample::Records { records, scratch } => {
                let d = &self.layout.decoders[feature];
                self.partition(&mut records[range.clone()], &mut scratch[range], |r, s| {
                    partition_records(r, s, d, bin)
                })
            }
        }
    }

    /// A stable partition by `part`, in two halves on two threads for large nodes; the
    /// halves' middle blocks are then swapped, so the order is that of one pass.
    pub(super) fn partition<T: Copy + Send>(
        &self,
        rows: &mut [T],
        scratch: &mut [T],
        part: impl Fn(&mut [T], &mut [T]) -> usize + Sync,
    ) -> usize {
        if !self.params.parallel || rows.len() < PARALLEL_WORK {
            return part(rows, scratch);
        }
        let m = rows.len() / 2;
        let (a, b) = {
            let (r1, r2) = rows.split_at_mut(m);
            let (s1, s2) = scratch.split_at_mut(m);
            rayon::join(|| part(r1, s1), || part(r2, s2))
        };
        // [L1 R1 | L2 R2] → [L1 L2 R1 R2]
        scratch[..m - a].copy_from_slice(&rows[a..m]);
        rows.copy_within(m..m + b, a);
        rows[a + b..m + b].copy_from_slice(&scratch[..m - a]);
        a + b
    }
}

/// Stable partition of `rows` into bin <= `bin` then the rest; returns the left count.
/// Branch-free: every row is written to both sides and only the side it belongs to
/// advances; the split is unpredictable, and a branch on it mispredicted about half
/// the time.
pub(super) fn partition(rows: &mut [u32], scratch: &mut [u32], col: &[u8], bin: u8) -> usize {
    let (mut l, mut r, done) = crate::simd::partition_prefix(rows, scratch, col, bin);
    for i in done..rows.len() {
        let row = rows[i];
        let left = usize::from(col[row as usize] <= bin);
        rows[l] = row;
        scratch[r] = row;
        l += left;
        r += 1 - left;
    }
    rows[l..].copy_from_slice(&scratch[..r]);
    l
}

/// [`partition`] for records, by the feature that `decoder` reads: a record goes
/// left when the feature's bin is at most `bin`.
pub(super) fn partition_records(
    records: &mut [Record],
    scratch: &mut [Record],
    decoder: &Decoder,
    bin: u8,
) -> usize {
    let shift = 8 * decoder.unit as u32;
    let (mut l, mut r, done) =
        crate::simd::partition_records_prefix(records, scratch, shift, &decoder.bins, bin);
    for i in done..records.len() {
        let rec = records[i];
        let left = usize::from(decoder.bins[usize::from((rec >> shift) as u8)] <= bin);
        records[l] = rec;
        scratch[r] = rec;
        l += left;
        r += 1 - left;
    }
    records[l..].copy_from_slice(&scratch[..r]);
    l
}
