//! The histogram layout: which bins each feature takes, bundled and multiplied groups,
//! and the counted columns' bins row by row.

use std::borrow::Cow;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::rows::{RECORD_UNITS, Record};
use super::sums::Sums;
use crate::binning::Binned;

/// Where a feature's bins live in a histogram.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place {
    /// The feature's own bins start here.
    Own(usize),
    /// A two-bin feature bundled with others it never overlaps: only its bin 1 is
    /// counted, here; its bin 0 is the node's total minus that.
    Bundled(usize),
}

/// Histogram layout: features grouped, each group counted once per row.
///
/// Two-bin columns that are never non-zero on the same row (the one-hot columns of
/// a categorical) are bundled into one group whose bin says which of them is set,
/// as LightGBM's exclusive feature bundling does. Counting reads one byte per group,
/// not per feature, and the splits found are exactly those of the unbundled columns.
/// Every group takes only the bins it has, so a histogram stays small enough for L1
/// and is cheap to clear, subtract and merge.
///
/// Groups whose bin counts multiply to at most 256 are then counted together, as one
/// [`Product`] whose bin is their bins' combination; each group's own bins are the
/// product's marginals. Counting is bound by one read-modify-write per counted
/// column and row, so this cuts the work by the groups it merges (the insurance data
/// counts 4 columns instead of 7), and the sums stay exact.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) places: Vec<Place>,
    /// Where each counted column's bins start, and how many it has.
    pub(super) units: Vec<(usize, usize)>,
    pub(super) products: Vec<Product>,
    /// Bins in a histogram; the last is [`Layout::spare`].
    pub(super) hist_len: usize,
    /// Counted columns' bins row by row (`bytes[r * units.len() + unit]`), for trees
    /// grown from indices: built at once for boosting, on first use otherwise.
    pub(super) bytes: OnceLock<Vec<u8>>,
    /// The same as [`Record`]s with code 0, one per row, for classification trees
    /// with at most [`RECORD_UNITS`] counted columns (else empty).
    pub(super) records: Vec<Record>,
    /// How to read each feature from its counted column.
    pub(super) decoders: Vec<Decoder>,
}

/// Whether a layout bundles features (see [`Layout`]); tests compare it with one that
/// does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bundling {
    /// Exclusive two-bin columns share a group, and small groups a product.
    Exclusive,
    /// Every feature is its own group and counted column. Only tests build such
    /// layouts, to check that bundling finds exactly the unbundled splits.
    #[cfg_attr(not(test), allow(dead_code))]
    PerFeature,
}

/// Which form of the rows a layout prepares for the trees that grow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowForm {
    /// [`Record`]s, for classification trees (when the counted columns fit in one).
    Records,
    /// Bytes for trees grown from row indices (boosting's rows carry gradients).
    Indices,
}

/// How a feature is read from the byte of its counted column.
#[derive(Debug, Clone)]
pub(super) struct Decoder {
    pub(super) unit: usize,
    /// The feature's bin, for each byte the column can hold.
    pub(super) bins: [u8; 256],
    /// The histogram bin where a row with that byte counts for this feature. A bundled
    /// feature's rows in its bin 0 go to the spare bin, as that bin is never counted.
    pub(super) slots: [u32; 256],
}

/// Groups counted as one column: the counted bin is `sum(bin_k * stride_k)`, the
/// first member varying fastest.
#[derive(Debug, Clone)]
pub(super) struct Product {
    /// Where the product's bins start.
    pub(super) start: usize,
    pub(super) len: usize,
    /// Each member group's bins: where they start, how many, and its features.
    pub(super) members: Vec<(usize, usize, Vec<usize>)>,
}

impl Layout {
    /// With [`Bundling::PerFeature`], each feature is its own group, counted on its
    /// own. With [`RowForm::Records`], the rows are also laid out as [`Record`]s, if
    /// they fit.
    pub(super) fn new(data: &Binned, bundling: Bundling, form: RowForm) -> Self {
        let bundle = bundling == Bundling::Exclusive;
        let (n, nf) = (data.n_rows, data.n_features());
        // Members of each group, and for bundles the rows already taken, as bitsets:
        // checking a column against a bundle is then a word-wise AND.
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut taken: Vec<Option<Vec<u64>>> = Vec::new();
        for f in 0..nf {
            if !(bundle && data.mappers[f].n_bins() == 2) {
                members.push(vec![f]);
                taken.push(None);
                continue;
            }
            let set: Vec<u64> = data.columns[f]
                .chunks(64)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(0, |w, (i, &b)| w | u64::from(b != 0) << i)
                })
                .collect();
            let fits = |g: usize| match &taken[g] {
                Some(t) => members[g].len() < 255 && t.iter().zip(&set).all(|(a, b)| a & b == 0),
                None => false,
            };
            match (0..members.len()).find(|&g| fits(g)) {
                Some(g) => {
                    members[g].push(f);
                    let t = taken[g].as_mut().expect("a bundle");
                    for (t, s) in t.iter_mut().zip(&set) {
                        *t |= s;
                    }
                }
                None => {
                    members.push(vec![f]);
                    taken.push(Some(set));
                }
            }
        }
        let mut places = vec![Place::Own(0); nf];
        let mut starts = Vec::with_capacity(members.len());
        let mut bins = Vec::with_capacity(members.len());
        let mut group_rows: Vec<Cow<[u8]>> = Vec::with_capacity(members.len());
        let mut hist_len = 0;
        for (g, fs) in members.iter().enumerate() {
            starts.push(hist_len);
            if taken[g].is_none() {
                let f = fs[0];
                places[f] = Place::Own(hist_len);
                group_rows.push(Cow::Borrowed(&data.columns[f]));
                bins.push(data.mappers[f].n_bins());
            } else {
                // Bin 0: none of the members is set; bin k: member k - 1 is.
                let mut col = vec![0u8; n];
                for (k, &f) in fs.iter().enumerate() {
                    places[f] = Place::Bundled(hist_len + k + 1);
                    // A select, not a branch: a one-hot column is a coin toss per row.
                    let member = (k + 1) as u8;
                    for (c, &b) in col.iter_mut().zip(&data.columns[f]) {
                        *c = if b != 0 { member } else { *c };
                    }
                }
                group_rows.push(Cow::Owned(col));
                bins.push(fs.len() + 1);
            }
            hist_len += bins[g];
        }

        // First fit, smallest groups first: products then merge the many small groups
        // and stay small themselves, keeping the histogram short.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&g| bins[g]);
        let mut packs: Vec<(Vec<usize>, usize)> = Vec::new();
        for g in order {
            // Eight members of two bins already fill 256.
            let fits =
                |(gs, size): &&mut (Vec<usize>, usize)| gs.len() < 8 && *size * bins[g] <= 256;
            match packs.iter_mut().find(|p| bundle && fits(p)) {
                Some((gs, size)) => {
                    gs.push(g);
                    *size *= bins[g];
                }
                None => packs.push((vec![g], bins[g])),
            }
        }
        packs.sort_by_key(|(gs, _)| gs.iter().min().copied());

        let nu = packs.len();
        let mut units = Vec::with_capacity(nu);
        let mut products = Vec::new();
        // Each group's counted column, and the stride of its bins in that column.
        let mut counted_in = vec![(0, 1); members.len()];
        for (u, (gs, size)) in packs.into_iter().enumerate() {
            if let [g] = gs[..] {
                units.push((starts[g], bins[g]));
                counted_in[g] = (u, 1);
                continue;
            }
            units.push((hist_len, size));
            let mut stride = 1;
            for &g in &gs {
                counted_in[g] = (u, stride);
                stride *= bins[g];
            }
            products.push(Product {
                start: hist_len,
                len: size,
                members: gs
                    .iter()
                    .map(|&g| (starts[g], bins[g], members[g].clone()))
                    .collect(),
            });
            hist_len += size;
        }
        let spare = hist_len;
        let mut group_of = vec![0; nf];
        for (g, fs) in members.iter().enumerate() {
            for &f in fs {
                group_of[f] = g;
            }
        }
        let decoders = places
            .iter()
            .zip(group_of)
            .map(|(&place, g)| {
                let (unit, stride) = counted_in[g];
                let mut d = Decoder {
                    unit,
                    bins: [0; 256],
                    slots: [0; 256],
                };
                for byte in 0..256 {
                    let group_bin = byte / stride % bins[g];
                    (d.bins[byte], d.slots[byte]) = match place {
                        Place::Own(start) => (group_bin as u8, (start + group_bin) as u32),
                        // Bin 1 is the group's bin `at - start`; bin 0 is not counted.
                        Place::Bundled(at) if group_bin == at - starts[g] => (1, at as u32),
                        Place::Bundled(_) => (0, spare as u32),
                    };
                }
                d
            })
            .collect();
        // Row by row, each counted column's bin, in one parallel pass over the groups'
        // columns: this runs before any tree can start.
        let bins_of: Vec<Vec<(usize, &[u8])>> = (0..nu)
            .map(|u| {
                counted_in
                    .iter()
                    .zip(&group_rows)
                    .filter(|((unit, _), _)| *unit == u)
                    .map(|((_, stride), col)| (*stride, &col[..]))
                    .collect()
            })
            .collect();
        let unit_byte = |u: usize, r: usize| {
            let sum: usize = bins_of[u]
                .iter()
                .map(|&(stride, col)| usize::from(col[r]) * stride)
                .sum();
            sum as u8
        };
        let (bytes, records) = if form == RowForm::Records && nu <= RECORD_UNITS {
            let records = (0..n)
                .into_par_iter()
                .map(|r| (0..nu).fold(0, |rec, u| rec | Record::from(unit_byte(u, r)) << (8 * u)))
                .collect();
            (OnceLock::new(), records)
        } else {
            let mut bytes = vec![0; n * nu];
            bytes.par_chunks_mut(nu).enumerate().for_each(|(r, row)| {
                for (u, b) in row.iter_mut().enumerate() {
                    *b = unit_byte(u, r);
                }
            });
            (OnceLock::from(bytes), Vec::new())
        };
        Self {
            places,
            units,
            products,
            hist_len: spare + 1,
            bytes,
            records,
            decoders,
        }
    }

    /// The counted columns' bins row by row, one byte each: for a classification
    /// layout, laid out from its records the first time a tree grows from indices.
    pub(super) fn bytes(&self) -> &[u8] {
        let nu = self.units.len();
        self.bytes.get_or_init(|| {
            let bytes = self.records.iter().map(|r| r.to_le_bytes());
            bytes.flat_map(|b| b.into_iter().take(nu)).collect()
        })
    }

    /// The bin that collects rows no feature's bins want (see [`Decoder::slots`]).
    pub(super) fn spare(&self) -> usize {
        self.hist_len - 1
    }

    /// Sets the bins of the product members that hold any of `features` to the
    /// product's marginals; other members' bins are left stale, as nothing reads them.
    pub(super) fn marginalize(&self, hist: &mut [Sums], features: &[usize]) {
        for p in &self.products {
            // Products come after every group's own bins.
            let (groups, product) = hist.split_at_mut(p.start);
            let product = &product[..p.len];
            let mut stride = 1;
            for (start, len, fs) in &p.members {
                if fs.iter().any(|f| features.contains(f)) {
                    // Product bin `(q * len + d) * stride + t` has this member in bin `d`.
                    for (d, out) in groups[*start..start + len].iter_mut().enumerate() {
                        let mut sum = Sums::default();
                        for block in product.chunks_exact(stride * len) {
                            for &b in &block[d * stride..(d + 1) * stride] {
                                sum += b;
                            }
                        }
                        *out = sum;
                    }
                }
                stride *= len;
            }
        }
    }
}
