use rand::{Rng, SeedableRng};

use std::sync::Arc;

use rand_chacha::ChaCha8Rng;

use super::count::{Counted, Pool};
use super::layout::{Bundling, Layout, Place, RowForm};
use super::partition::{partition, partition_records};
use super::rows::{CODE_SHIFT, Record, RowStats, Sample};
use super::*;
use crate::binning::Binned;
use crate::preprocess::Matrix;

/// A one-hot categorical (three exclusive columns), a binary column that overlaps
/// them, a binary column whose values are not 0/1, and a numeric column.
fn data(n: usize, seed: u64) -> (Binned, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut columns: Vec<Vec<f32>> = (0..6).map(|_| Vec::with_capacity(n)).collect();
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let cat = rng.random_range(0..4); // 3 means "unknown": all one-hot columns 0
        for (k, col) in columns[..3].iter_mut().enumerate() {
            col.push(f32::from(u8::from(cat == k)));
        }
        let overlap = rng.random_bool(0.3);
        columns[3].push(f32::from(u8::from(overlap)));
        let odd = if rng.random_bool(0.5) { 3.0 } else { 7.0 };
        columns[4].push(odd);
        let x: f32 = rng.random_range(0.0..10.0);
        columns[5].push(x);
        let signal = f64::from(u8::from(cat == 1)) + f64::from(x) / 10.0
            - f64::from(u8::from(overlap && cat == 2));
        y.push(signal + rng.random_range(-0.5..0.5));
    }
    (Binned::new(&Matrix { n_rows: n, columns }, 255), y)
}

/// A booster's tree parameters with no limits but `max_depth`.
fn boosting(max_depth: Option<usize>) -> GrowParams {
    GrowParams {
        criterion: Criterion::Newton,
        max_depth,
        max_leaf_nodes: None,
        min_samples_leaf: 1,
        min_samples_split: 2,
        min_child_weight: 0.0,
        lambda: 0.0,
        min_gain: 0.0,
        max_features: None,
        parallel: true,
        leaf_rows: true,
    }
}

#[test]
fn the_two_thread_partition_keeps_the_one_pass_order() {
    let (binned, _) = data(150_000, 3);
    let params = boosting(None);
    let grower = Grower::new(&binned, &params);
    let col = &binned.columns[5];
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // A scattered subset of rows, as a deep node holds.
    let rows: Vec<u32> = (0..150_000u32).filter(|_| rng.random_bool(0.8)).collect();
    for bin in [0, 17, 100, 254] {
        let (mut a, mut b) = (rows.clone(), rows.clone());
        let mut scratch = vec![0; rows.len()];
        let la = grower.partition(&mut a, &mut scratch, |r, s| partition(r, s, col, bin));
        let lb = partition(&mut b, &mut scratch, col, bin);
        assert_eq!((la, &a), (lb, &b));
        assert!(a[..la].iter().all(|&r| col[r as usize] <= bin));
        assert!(a[la..].iter().all(|&r| col[r as usize] > bin));
    }
}

/// The vector kernel must agree with the scalar loop it speeds up: a stable
/// partition, whatever the length, order and position of the rows (the last rows
/// of a column are left to the scalar loop).
#[test]
fn partition_is_a_stable_filter() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let col: Vec<u8> = (0..5000).map(|_| rng.random()).collect();
    for len in [0, 1, 15, 16, 17, 100, 1000, 4999] {
        for sorted in [false, true] {
            let mut rows: Vec<u32> = (0..len)
                .map(|k| match k % 7 {
                    0 => 4997 + rng.random_range(0..3),
                    _ => rng.random_range(0..5000),
                })
                .collect();
            if sorted {
                rows.sort_unstable();
            }
            for bin in [0, 90, 200, 255] {
                let left: Vec<u32> = rows
                    .iter()
                    .copied()
                    .filter(|&r| col[r as usize] <= bin)
                    .collect();
                let right = rows.iter().copied().filter(|&r| col[r as usize] > bin);
                let expected: Vec<u32> = left.iter().copied().chain(right).collect();
                let mut got = rows.clone();
                let l = partition(&mut got, &mut vec![0; len], &col, bin);
                assert_eq!((l, &got), (left.len(), &expected), "{len} rows, bin {bin}");
            }
        }
    }
}

/// Records split as the rows they hold would: a stable filter by the split
/// feature's bin, for every kind of feature (a numeric column, a one-hot member of
/// a bundle, members of a product), at lengths around the vector kernel's steps.
#[test]
fn record_partition_is_a_stable_filter() {
    let (binned, _) = data(3000, 4);
    let layout = Layout::new(&binned, Bundling::Exclusive, RowForm::Records);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for len in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 3000] {
        let rows: Vec<u32> = (0..len).map(|_| rng.random_range(0..3000)).collect();
        let records: Vec<Record> = rows
            .iter()
            .map(|&r| layout.records[r as usize] | u64::from(r % 256) << CODE_SHIFT)
            .collect();
        for (f, d) in layout.decoders.iter().enumerate() {
            for bin in [0, 1, 2, 100, 254, 255] {
                let col = &binned.columns[f];
                let (left, right): (Vec<_>, Vec<_>) = rows
                    .iter()
                    .zip(&records)
                    .partition(|(r, _)| col[**r as usize] <= bin);
                let expected: Vec<Record> =
                    left.iter().chain(&right).map(|(_, rec)| **rec).collect();
                let mut got = records.clone();
                let l = partition_records(&mut got, &mut vec![0; len], d, bin);
                assert_eq!(
                    (l, &got),
                    (left.len(), &expected),
                    "{len} rows, feature {f}, bin {bin}"
                );
            }
        }
    }
}

/// The vectorizable `exp` stays within 4 ulps of the library's, and the booster's
/// gradients from it match those from the library's sigmoid to the last fixed-point
/// step (they are truncated to 2^-32).
#[test]
fn boosting_gradients_match_the_library_sigmoid() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for _ in 0..100_000 {
        let x: f64 = rng.random_range(-700.0..700.0);
        let (a, b) = (crate::simd::exp(x), x.exp());
        assert!(
            (a - b).abs() <= 4.0 * f64::EPSILON * b,
            "exp({x}): {a} vs {b}"
        );
    }
    assert_eq!(crate::simd::exp(0.0), 1.0);
    // Saturating, not wrapping, far outside.
    let exp = crate::simd::exp;
    assert_eq!((exp(-1e9), exp(1e9)), (exp(-708.0), exp(708.0)));
    assert!(exp(708.0) > 1e307 && exp(-708.0) < 1e-307);

    let (binned, _) = data(10_007, 2);
    let params = boosting(Some(3));
    let scores: Vec<f64> = (0..binned.n_rows)
        .map(|i| match i % 100 {
            0 => 800.0,
            1 => -800.0,
            _ => rng.random_range(-30.0..30.0),
        })
        .collect();
    let y: Vec<u8> = (0..binned.n_rows).map(|_| rng.random_range(0..2)).collect();
    let mut fast = Grower::new(&binned, &params);
    fast.set_logistic_gradients(&scores, &y);
    let mut library = Grower::new(&binned, &params);
    library.set_gradients(|i| {
        let p = crate::learners::sigmoid(scores[i]);
        (p - f64::from(y[i]), (p * (1.0 - p)).max(1e-16))
    });
    let (RowStats::Newton { g: g1, h: h1 }, RowStats::Newton { g: g2, h: h2 }) =
        (&fast.stats, &library.stats)
    else {
        panic!("gradients set")
    };
    for i in 0..binned.n_rows {
        assert!(
            (g1[i] - g2[i]).abs() <= 1 && (h1[i] - h2[i]).abs() <= 1,
            "row {i}"
        );
    }
}

#[test]
fn bundling_finds_exactly_the_unbundled_splits() {
    let (binned, y) = data(5000, 7);
    let params = GrowParams {
        min_samples_leaf: 5,
        lambda: 1.0,
        ..boosting(Some(6))
    };
    let mut bundled = Grower::new(&binned, &params);
    let mut plain = Grower {
        layout: Arc::new(Layout::new(&binned, Bundling::PerFeature, RowForm::Indices)),
        ..Grower::new(&binned, &params)
    };
    // The one-hot columns share a group; the overlapping and the non-0/1 columns
    // cannot join it (the 3/7 column is bin 1 on half the rows). Those three
    // groups (4, 2 and 2 bins) are counted as one product of 16 bins, the
    // numeric column on its own.
    let l = &bundled.layout;
    assert_eq!(l.units.len(), 2, "{:?}", l.units);
    assert_eq!((l.products[0].len, l.products[0].members.len()), (16, 3));
    assert_eq!(plain.layout.units.len(), 6);
    assert!(plain.layout.products.is_empty());
    let grad = |i: usize| (-y[i], 1.0);
    bundled.set_gradients(grad);
    plain.set_gradients(grad);
    let rows: Vec<u32> = (0..binned.n_rows as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a = bundled.grow(rows.clone(), &mut rng);
    let b = plain.grow(rows, &mut rng);
    assert!(a.tree.n_leaves() > 8);
    assert!(a.tree.nodes().any(|n| n.feature < 3));
    assert_eq!(a.tree, b.tree);
}

/// Class weights packed into bytes must count exactly as the same weights given
/// as gradients: in the packed chunks' fullest bins at the largest weight, in
/// nodes that count every feature, nodes that count a sample, and nodes that
/// subtract.
#[test]
fn class_weights_count_exactly_as_their_gradients() {
    let (mut binned, y) = data(40_000, 5);
    // A column whose bin 0 holds 99% of the rows, so a packed chunk of rows at the
    // largest weight comes within 1% of its field's limit.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let rare: Vec<f32> = (0..binned.n_rows)
        .map(|_| f32::from(u8::from(rng.random_bool(0.01))))
        .collect();
    binned.columns.push(rare.iter().map(|&v| v as u8).collect());
    binned
        .mappers
        .push(crate::binning::BinMapper::fit(&rare, 255));
    let labels: Vec<u8> = y.iter().map(|&v| u8::from(v > 0.8)).collect();
    let weights: Vec<u8> = (0..binned.n_rows)
        .map(|r| match rng.random_range(0..10) {
            _ if r < 20_000 => MAX_WEIGHT,
            0 => 0,
            k => k,
        })
        .collect();
    let rows: Vec<u32> = (0..binned.n_rows as u32)
        .filter(|&r| weights[r as usize] > 0)
        .collect();
    let all: Vec<usize> = (0..binned.n_features()).collect();
    for (max_features, min_samples_leaf) in [(None, 1), (Some(2), 1), (Some(3), 200)] {
        let params = GrowParams {
            criterion: Criterion::Gini,
            max_depth: Some(8),
            max_leaf_nodes: None,
            min_samples_leaf,
            min_samples_split: 2,
            min_child_weight: 0.0,
            lambda: 0.0,
            min_gain: 0.0,
            max_features,
            parallel: false,
            leaf_rows: false,
        };
        let mut packed = Grower::new(&binned, &params);
        packed.set_class_weights(|i| weights[i], &labels);
        let mut wide = Grower::new(&binned, &params);
        wide.set_gradients(|i| {
            let w = f64::from(weights[i]);
            (w * f64::from(labels[i]), w)
        });
        let indexed = Sample::Rows {
            rows: rows.clone(),
            scratch: Vec::new(),
        };
        let mut records = vec![0; binned.n_rows];
        let bins = &packed.layout.records;
        let kept = crate::simd::drawn_records(&weights, &labels, bins, &mut records);
        records.truncate(kept);
        let records = Sample::Records {
            records,
            scratch: Vec::new(),
        };
        let n = rows.len();
        let hist = |g: &Grower, s: &Sample, features: &[usize], counted: Counted| {
            g.histogram(s, 0..n, features, counted, &mut Pool::default())
        };
        let a = hist(&packed, &indexed, &all, Counted::Every);
        for other in [
            hist(&wide, &indexed, &all, Counted::Every),
            hist(&packed, &records, &all, Counted::Every),
        ] {
            for (x, y) in a.iter().zip(&other).take(packed.layout.spare()) {
                assert_eq!((x.g, x.h, x.n), (y.g, y.h, y.n));
            }
        }
        // Counting one feature alone fills its bins as counting all of them does.
        for f in 0..binned.n_features() {
            let bins = match packed.layout.places[f] {
                Place::Own(start) => start..start + binned.mappers[f].n_bins(),
                Place::Bundled(at) => at..at + 1,
            };
            for sample in [&indexed, &records] {
                let one = hist(&packed, sample, &[f], Counted::Sample);
                for (x, y) in one[bins.clone()].iter().zip(&a[bins.clone()]) {
                    assert_eq!((x.g, x.h, x.n), (y.g, y.h, y.n), "feature {f}");
                }
            }
        }
        let seed = || ChaCha8Rng::seed_from_u64(1);
        let a = packed.grow(rows.clone(), &mut seed());
        let b = wide.grow(rows.clone(), &mut seed());
        assert!(a.tree.n_leaves() > 20, "{max_features:?}");
        assert_eq!(a.tree, b.tree, "{max_features:?}");
        let counts = Drawn::Counts(&weights);
        let tree = packed.grow_classes(counts, &labels, &mut seed());
        assert_eq!(tree, b.tree, "{max_features:?}");
        // Unbundled, the 7 columns are counted by the loop for more columns than
        // the unrolled ones cover, and as records of 7 columns.
        let mut unbundled = Grower {
            layout: Arc::new(Layout::new(&binned, Bundling::PerFeature, RowForm::Records)),
            ..Grower::new(&binned, &params)
        };
        assert_eq!(unbundled.layout.units.len(), 7);
        let tree = unbundled.grow_classes(counts, &labels, &mut seed());
        assert_eq!(tree, b.tree, "{max_features:?}");
        unbundled.set_class_weights(|i| weights[i], &labels);
        let c = unbundled.grow(rows.clone(), &mut seed());
        assert_eq!(c.tree, b.tree, "{max_features:?}");
        // A layout without records (as for data with too many counted columns)
        // grows from indices.
        let mut wide_data = Grower {
            layout: Arc::new(Layout::new(&binned, Bundling::Exclusive, RowForm::Indices)),
            ..Grower::new(&binned, &params)
        };
        let tree = wide_data.grow_classes(counts, &labels, &mut seed());
        assert_eq!(tree, b.tree, "{max_features:?}");
        // Rows given as a list weigh one each, from records or from indices.
        let ones: Vec<u8> = weights.iter().map(|&w| u8::from(w > 0)).collect();
        let unweighted = packed.grow_classes(Drawn::Counts(&ones), &labels, &mut seed());
        assert!(unweighted.n_leaves() > 8, "{max_features:?}");
        for grower in [&mut packed, &mut wide_data] {
            let tree = grower.grow_classes(Drawn::Rows(&rows), &labels, &mut seed());
            assert_eq!(tree, unweighted, "{max_features:?}");
        }
    }
}

/// A small node's split found from its rows is the one its histogram gives (same
/// feature, bin, gain and left sums), for each kind of row, with leaf limits and
/// with a sample of features.
#[test]
fn small_nodes_split_from_their_rows_as_from_their_histogram() {
    let (binned, y) = data(3000, 11);
    let labels: Vec<u8> = y.iter().map(|&v| u8::from(v > 0.8)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let weights: Vec<u8> = (0..binned.n_rows).map(|_| rng.random_range(1..4)).collect();
    let key = |s: Option<super::split::Split>| {
        s.map(|s| {
            (
                s.feature,
                s.bin,
                s.gain.to_bits(),
                s.left.g,
                s.left.h,
                s.left.n,
            )
        })
    };
    let mut found = 0;
    for (criterion, min_samples_leaf, min_child_weight) in [
        (Criterion::Newton, 1, 0.0),
        (Criterion::Newton, 3, 0.3),
        (Criterion::Gini, 1, 0.0),
        (Criterion::Entropy, 2, 2.0),
    ] {
        let params = GrowParams {
            criterion,
            min_samples_leaf,
            min_child_weight,
            lambda: 1.0,
            ..boosting(None)
        };
        let mut newton = Grower::new(&binned, &params);
        newton.set_gradients(|i| (-y[i], 0.5 + (i % 3) as f64));
        let mut codes = Grower::new(&binned, &params);
        codes.set_class_weights(|i| weights[i], &labels);
        let records = Grower {
            layout: Arc::new(Layout::new(&binned, Bundling::Exclusive, RowForm::Records)),
            ..Grower::new(&binned, &params)
        };
        for trial in 0..300 {
            let n = 2 + trial % 63;
            let rows: Vec<u32> = (0..n)
                .map(|_| rng.random_range(0..binned.n_rows as u32))
                .collect();
            let mut features: Vec<usize> = (0..binned.n_features()).collect();
            if trial % 2 == 1 {
                features.retain(|_| rng.random_bool(0.5));
            }
            let as_rows = || Sample::Rows {
                rows: rows.clone(),
                scratch: Vec::new(),
            };
            let as_records = Sample::Records {
                records: rows
                    .iter()
                    .map(|&r| {
                        let code = class_code(weights[r as usize], labels[r as usize]);
                        records.layout.records[r as usize] | Record::from(code) << CODE_SHIFT
                    })
                    .collect(),
                scratch: Vec::new(),
            };
            for (grower, sample) in [
                (&newton, as_rows()),
                (&codes, as_rows()),
                (&records, as_records),
            ] {
                assert!(grower.direct(n));
                let total = grower.sums(&sample);
                let mut pool = Pool::default();
                let hist = grower.histogram(&sample, 0..n, &features, Counted::Every, &mut pool);
                let direct = grower.direct_split(&sample, 0..n, &features, total);
                assert_eq!(
                    key(direct),
                    key(grower.best_split(&hist, &features, total)),
                    "{criterion:?}, {n} rows, features {features:?}"
                );
                found += usize::from(direct.is_some());
            }
        }
    }
    assert!(found > 2000, "only {found} nodes split");
}
