//! The counting kernels: a node's sums and histogram, from indices or records, on
//! one thread or many, and the buffers histograms live in.

use std::ops::Range;

use rayon::prelude::*;

use super::layout::Place;
use super::rows::{CODE_SHIFT, RECORD_UNITS, Record, RowStats, Sample, count_stat, record_stat};
use super::sums::Sums;
use super::{Grower, PARALLEL_WORK};

/// Which features a histogram counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counted {
    /// Every counted column: the histogram can be subtracted from.
    Every,
    /// Only the features the node may split on; other bins are stale.
    Sample,
}

/// Histogram buffers, reused from node to node and tree to tree: fresh allocations of
/// this size are fresh pages, and the kernel zeroing them cost more than the counting.
#[derive(Default)]
pub(super) struct Pool(Vec<Vec<Sums>>);

impl Pool {
    pub(super) fn take(&mut self, len: usize) -> Vec<Sums> {
        let mut h = self.take_dirty(len);
        h.fill(Sums::default());
        h
    }

    /// A buffer whose contents are stale except where the caller clears it.
    pub(super) fn take_dirty(&mut self, len: usize) -> Vec<Sums> {
        let mut h = self.0.pop().unwrap_or_default();
        h.resize(len, Sums::default());
        h
    }

    pub(super) fn give(&mut self, h: Vec<Sums>) {
        self.0.push(h);
    }
}

impl Grower<'_> {
    /// Whether a node of `n` rows counts every feature, though it may split on only a
    /// sample of them: its children's histograms are then one count and one
    /// subtraction, not two counts. Counting every group reads each row's bins in one
    /// record, where counting a sample gathers from a column per feature. Small nodes
    /// count just their sample, as clearing every bin would cost more.
    pub(super) fn counted(&self, n: usize) -> Counted {
        if self.params.max_features.is_none() || n >= self.layout.hist_len {
            Counted::Every
        } else {
            Counted::Sample
        }
    }

    /// The sums of all the sample's rows.
    pub(super) fn sums(&self, sample: &Sample) -> Sums {
        fn sum<T: Copy>(rows: &[T], stat: impl Fn(T) -> (i64, i64)) -> Sums {
            rows.iter().fold(Sums::default(), |s, &r| {
                let (g, h) = stat(r);
                Sums {
                    g: s.g + g,
                    h: s.h + h,
                    n: s.n + 1,
                }
            })
        }
        match (sample, &self.stats) {
            (Sample::Records { records, .. }, _) => sum(records, record_stat),
            (Sample::Rows { rows, .. }, RowStats::Newton { g, h }) => {
                sum(rows, |r| (g[r as usize], h[r as usize]))
            }
            (Sample::Rows { rows, .. }, RowStats::Codes(codes)) => {
                sum(rows, |r| count_stat(codes[r as usize]))
            }
        }
    }

    /// The histogram of the sample's rows in `range`: over every group, or over
    /// `features` only (other bins are stale).
    pub(super) fn histogram(
        &self,
        sample: &Sample,
        range: Range<usize>,
        features: &[usize],
        counted: Counted,
        pool: &mut Pool,
    ) -> Vec<Sums> {
        // One copy of the counting loops per kind of row, so the row's `(g, h)` is
        // computed inline.
        match (sample, &self.stats) {
            (Sample::Records { records, .. }, _) => self.histogram_with(
                &records[range],
                features,
                counted,
                pool,
                |rows, hist| self.fill_counts(rows, hist, count_records),
                |rows, hist| self.fill_record_features(rows, features, hist),
            ),
            (Sample::Rows { rows, .. }, RowStats::Newton { g, h }) => self.histogram_with(
                &rows[range],
                features,
                counted,
                pool,
                |rows, hist| {
                    hist.fill(Sums::default());
                    self.fill_gradients(rows, hist, g, h)
                },
                |rows, hist| self.fill_features(rows, features, hist, |r| (g[r], h[r])),
            ),
            (Sample::Rows { rows, .. }, RowStats::Codes(codes)) => self.histogram_with(
                &rows[range],
                features,
                counted,
                pool,
                |rows, hist| {
                    self.fill_counts(rows, hist, |rows, packed| {
                        count_indexed(rows, self.layout.bytes(), codes, packed)
                    })
                },
                |rows, hist| self.fill_features(rows, features, hist, |r| count_stat(codes[r])),
            ),
        }
    }

    /// [`histogram`](Self::histogram) with the counting loops for its kind of rows:
    /// `fill` sets every counted column's bins, `fill_features` the features' bins.
    pub(super) fn histogram_with<T: Sync>(
        &self,
        rows: &[T],
        features: &[usize],
        counted: Counted,
        pool: &mut Pool,
        fill: impl Fn(&[T], &mut [Sums]) + Sync,
        fill_features: impl FnOnce(&[T], &mut [Sums]),
    ) -> Vec<Sums> {
        if counted == Counted::Sample {
            let mut hist = pool.take_dirty(self.layout.hist_len);
            fill_features(rows, &mut hist);
            return hist;
        }
        let nf = self.data.n_features();
        let parallel = self.params.parallel && rows.len() * nf >= PARALLEL_WORK;
        if !parallel {
            let mut hist = pool.take_dirty(self.layout.hist_len);
            fill(rows, &mut hist);
            self.layout.marginalize(&mut hist, features);
            return hist;
        }
        // Each thread counts its share of rows into its own histogram; integer sums
        // make the merged result independent of how rows were shared out.
        let threads = rayon::current_num_threads().max(1);
        let chunk = rows.len().div_ceil(threads).max(4096);
        let mut parts: Vec<Vec<Sums>> = (0..rows.len().div_ceil(chunk))
            .map(|_| pool.take_dirty(self.layout.hist_len))
            .collect();
        parts
            .par_iter_mut()
            .zip(rows.par_chunks(chunk))
            .for_each(|(hist, part)| fill(part, hist));
        let mut parts = parts.into_iter();
        let mut hist = parts
            .next()
            .unwrap_or_else(|| pool.take(self.layout.hist_len));
        for other in parts {
            for (x, &y) in hist.iter_mut().zip(&other) {
                *x += y;
            }
            pool.give(other);
        }
        self.layout.marginalize(&mut hist, features);
        hist
    }

    /// Sets the bins of `features` alone to the sums of `rows` (indices).
    pub(super) fn fill_features(
        &self,
        rows: &[u32],
        features: &[usize],
        hist: &mut [Sums],
        stat: impl Fn(usize) -> (i64, i64),
    ) {
        let mut columns: Vec<(&[u8], usize)> = Vec::with_capacity(features.len());
        for &f in features {
            let col = &self.data.columns[f][..];
            match self.layout.places[f] {
                // Adding into memory, most rows would wait for the previous row's
                // store to the same bin; bin 1's sums fit in registers instead,
                // and bin 0 is every other row.
                Place::Bundled(at) => hist[at] = count_binary(rows, col, &stat).0,
                Place::Own(start) if self.data.mappers[f].n_bins() == 2 => {
                    let (ones, all) = count_binary(rows, col, &stat);
                    hist[start] = all.minus(ones);
                    hist[start + 1] = ones;
                }
                Place::Own(start) => {
                    hist[start..start + self.data.mappers[f].n_bins()].fill(Sums::default());
                    columns.push((col, start));
                }
            }
        }
        // The other features are counted together, reading each row once; their
        // counts are independent chains of additions rather than one.
        if !columns.is_empty() {
            for &r in rows {
                let r = r as usize;
                let (g, h) = stat(r);
                for &(col, start) in &columns {
                    let b = &mut hist[start + usize::from(col[r])];
                    b.g += g;
                    b.h += h;
                    b.n += 1;
                }
            }
        }
    }

    /// Sets the bins of `features` alone to the sums of `records`. Small nodes only:
    /// the bins a record adds to come from per-feature tables.
    pub(super) fn fill_record_features(
        &self,
        records: &[Record],
        features: &[usize],
        hist: &mut [Sums],
    ) {
        let l = &self.layout;
        // Nothing reads the spare bin, but a reused histogram's sums there would
        // otherwise grow from node to node until they overflowed.
        hist[l.spare()] = Sums::default();
        let mut columns: Vec<(u32, &[u32; 256])> = Vec::with_capacity(features.len());
        for &f in features {
            match l.places[f] {
                Place::Own(start) => {
                    hist[start..start + self.data.mappers[f].n_bins()].fill(Sums::default())
                }
                Place::Bundled(at) => hist[at] = Sums::default(),
            }
            let d = &l.decoders[f];
            columns.push((8 * d.unit as u32, &d.slots));
        }
        for &rec in records {
            let (g, h) = record_stat(rec);
            for &(shift, slots) in &columns {
                let b = &mut hist[slots[usize::from((rec >> shift) as u8)] as usize];
                b.g += g;
                b.h += h;
                b.n += 1;
            }
        }
    }

    /// Sets the bins of every counted column of `hist` to the sums of `rows` (indices
    /// or records), reading each row once: `count` counts a chunk of them into this
    /// thread's counting space (see [`Self::fill_packed`]). Product members' bins are
    /// left to [`Layout::marginalize`].
    pub(super) fn fill_counts<T>(
        &self,
        rows: &[T],
        hist: &mut [Sums],
        count: impl Fn(&[T], &mut [[u64; 256]]),
    ) {
        thread_local! {
            /// Counting space, reused: allocating it per node was 2.5% of a
            /// full-depth forest's fit in perf (zeroing 256 bins a column, fresh pages).
            static PACKED: std::cell::RefCell<Vec<[u64; 256]>> = const {
                std::cell::RefCell::new(Vec::new())
            };
        }
        let nu = self.layout.units.len();
        if rows.is_empty() {
            hist.fill(Sums::default());
        }
        PACKED.with_borrow_mut(|packed| {
            packed.resize(nu, [0; 256]);
            self.fill_packed(rows, hist, &mut packed[..nu], count);
        });
    }

    /// Counts `rows` into `packed` (one array per counted column: 256 bins, so a bin
    /// byte indexes it unchecked) and unpacks the sums into `hist`. A bin's three sums
    /// are packed into one `u64` (21 bits of rows, 21 of weight, 22 of weighted
    /// labels), so each row adds once per column instead of three times: counting is
    /// bound by stores. A chunk of `2^14` rows of weight up to 127 cannot carry out of
    /// a field; each chunk is then unpacked into `hist`.
    pub(super) fn fill_packed<T>(
        &self,
        rows: &[T],
        hist: &mut [Sums],
        packed: &mut [[u64; 256]],
        count: impl Fn(&[T], &mut [[u64; 256]]),
    ) {
        const CHUNK: usize = 1 << 14;
        const FIELD: u64 = (1 << 21) - 1;
        let l = &self.layout;
        for (k, chunk) in rows.chunks(CHUNK).enumerate() {
            // Only a column's own bins are ever set, so only they need clearing.
            for (unit, &(_, len)) in packed.iter_mut().zip(&l.units) {
                unit[..len].fill(0);
            }
            count(chunk, packed);
            for (unit, &(start, len)) in packed.iter().zip(&l.units) {
                for (bin, &p) in hist[start..start + len].iter_mut().zip(unit) {
                    let sums = Sums {
                        n: (p & FIELD) as u32,
                        h: (((p >> 21) & FIELD) as i64) << 32,
                        g: ((p >> 42) as i64) << 32,
                    };
                    // The first chunk sets the histogram, so it need not be cleared.
                    if k == 0 {
                        *bin = sums;
                    } else {
                        *bin += sums;
                    }
                }
            }
        }
    }

    /// Sets every counted column's bins to the sums of boosting's `rows`, adding into
    /// a cleared histogram.
    pub(super) fn fill_gradients(&self, rows: &[u32], hist: &mut [Sums], g: &[i64], h: &[i64]) {
        let l = &self.layout;
        let nu = l.units.len();
        let bytes = l.bytes();
        for &r in rows {
            let r = r as usize;
            let (g, h) = (g[r], h[r]);
            let bins = &bytes[r * nu..(r + 1) * nu];
            for (&(offset, _), &b) in l.units.iter().zip(bins) {
                let bin = &mut hist[offset + usize::from(b)];
                bin.g += g;
                bin.h += h;
                bin.n += 1;
            }
        }
    }
}

/// What a classification row adds to a packed bin: one row, its weight, and its
/// weight again if its label is 1.
fn packed_add(code: u8) -> u64 {
    let code = u64::from(code);
    let w = code >> 1;
    1 | w << 21 | (w * (code & 1)) << 42
}

/// Counts rows given as indices into `packed`: each row's code and bins (`recs`, one
/// byte per counted column) are looked up.
fn count_indexed(rows: &[u32], recs: &[u8], codes: &[u8], packed: &mut [[u64; 256]]) {
    match packed.len() {
        1 => count_packed::<1>(rows, recs, codes, packed),
        2 => count_packed::<2>(rows, recs, codes, packed),
        3 => count_packed::<3>(rows, recs, codes, packed),
        4 => count_packed::<4>(rows, recs, codes, packed),
        5 => count_packed::<5>(rows, recs, codes, packed),
        6 => count_packed::<6>(rows, recs, codes, packed),
        nu => {
            for &r in rows {
                let r = r as usize;
                let add = packed_add(codes[r]);
                let bins = &recs[r * nu..(r + 1) * nu];
                for (unit, &b) in packed.iter_mut().zip(bins) {
                    unit[usize::from(b)] += add;
                }
            }
        }
    }
}

/// Counts records into `packed`, one array per counted column.
fn count_records(records: &[Record], packed: &mut [[u64; 256]]) {
    match packed.len() {
        1 => count_records_of::<1>(records, packed),
        2 => count_records_of::<2>(records, packed),
        3 => count_records_of::<3>(records, packed),
        4 => count_records_of::<4>(records, packed),
        5 => count_records_of::<5>(records, packed),
        6 => count_records_of::<6>(records, packed),
        7 => count_records_of::<7>(records, packed),
        nu => unreachable!("records hold at most {RECORD_UNITS} counted columns, not {nu}"),
    }
}

/// [`count_records`] for `N` counted columns, unrolled.
fn count_records_of<const N: usize>(records: &[Record], packed: &mut [[u64; 256]]) {
    let packed: &mut [[u64; 256]; N] = packed.try_into().expect("one array per column");
    for &rec in records {
        let add = packed_add((rec >> CODE_SHIFT) as u8);
        for (u, unit) in packed.iter_mut().enumerate() {
            unit[usize::from((rec >> (8 * u)) as u8)] += add;
        }
    }
}

/// The packed counting loop for `N` counted columns, unrolled: with `N` known, a
/// row's bins are one load and its adds need no loop.
fn count_packed<const N: usize>(
    rows: &[u32],
    recs: &[u8],
    codes: &[u8],
    packed: &mut [[u64; 256]],
) {
    let packed: &mut [[u64; 256]; N] = packed.try_into().expect("one array per column");
    // Deep nodes' rows are scattered: fetching a row's code and bins a few dozen rows
    // ahead hides the cache misses that otherwise stall the adds.
    const AHEAD: usize = 32;
    for (i, &r) in rows.iter().enumerate() {
        if let Some(&ahead) = rows.get(i + AHEAD) {
            crate::simd::prefetch(codes, ahead as usize);
            crate::simd::prefetch(recs, ahead as usize * N);
        }
        let r = r as usize;
        let add = packed_add(codes[r]);
        let bins: [u8; N] = recs[r * N..(r + 1) * N].try_into().expect("N bins a row");
        for (unit, b) in packed.iter_mut().zip(bins) {
            unit[usize::from(b)] += add;
        }
    }
}

/// The sums of the rows whose bin is 1, and of all rows, for a two-bin column.
fn count_binary(rows: &[u32], col: &[u8], stat: &impl Fn(usize) -> (i64, i64)) -> (Sums, Sums) {
    let (mut ones, mut all) = (Sums::default(), Sums::default());
    for &r in rows {
        let r = r as usize;
        let (g, h) = stat(r);
        // All-ones when the row's bin is 1, zero otherwise.
        let mask = -i64::from(col[r] & 1);
        ones.g += g & mask;
        ones.h += h & mask;
        ones.n += u32::from(col[r] & 1);
        all.g += g;
        all.h += h;
    }
    all.n = rows.len() as u32;
    (ones, all)
}
