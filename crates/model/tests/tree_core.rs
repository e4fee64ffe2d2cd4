//! Properties of the tree core that must hold for any data.

use predict_buy_model::core::{
    Binned, FitData, Matrix, fit_decision_tree, fit_gradient_boosting, fit_random_forest,
};
use predict_buy_model::{DecisionTreeParams, Ensemble, GradientBoostingParams, RandomForestParams};
use proptest::prelude::*;

fn matrix(rows: &[Vec<f32>]) -> Matrix {
    let n_features = rows.first().map_or(0, Vec::len);
    Matrix {
        n_rows: rows.len(),
        columns: (0..n_features)
            .map(|f| rows.iter().map(|r| r[f]).collect())
            .collect(),
    }
}

fn predict_all(e: &Ensemble, rows: &[Vec<f32>]) -> Vec<f64> {
    rows.iter().map(|r| e.predict_raw(r)).collect()
}

/// Rows with distinct feature vectors (few distinct values per feature, so every
/// value gets its own bin) and arbitrary labels.
fn labelled_rows() -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<u8>)> {
    (1usize..4, 3usize..120).prop_flat_map(|(dims, n)| {
        let row = proptest::collection::vec((0u8..40).prop_map(f32::from), dims);
        (
            proptest::collection::hash_set(
                row.prop_map(|r| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>()),
                2..n,
            ),
            Just(dims),
        )
            .prop_flat_map(|(set, _)| {
                let rows: Vec<Vec<f32>> = set
                    .into_iter()
                    .map(|r| r.into_iter().map(f32::from_bits).collect())
                    .collect();
                let n = rows.len();
                (Just(rows), proptest::collection::vec(0u8..2, n))
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_deep_tree_fits_separable_data_exactly((rows, y) in labelled_rows()) {
        let m = matrix(&rows);
        let binned = Binned::new(&m, 255);
        let tree = fit_decision_tree(&DecisionTreeParams::default(), &FitData { binned: &binned, y: &y });
        let p = predict_all(&tree, &rows);
        for (pi, yi) in p.iter().zip(&y) {
            prop_assert_eq!(*pi, f64::from(*yi));
        }
    }

    #[test]
    fn probabilities_stay_in_the_unit_interval((rows, y) in labelled_rows(), probe in proptest::collection::vec(-1e6f32..1e6, 3)) {
        prop_assume!(y.contains(&0) && y.contains(&1));
        let m = matrix(&rows);
        let binned = Binned::new(&m, 255);
        let data = FitData { binned: &binned, y: &y };
        let gb = GradientBoostingParams { n_estimators: 20, learning_rate: 0.5, max_depth: None, ..Default::default() };
        let (boosted, _) = fit_gradient_boosting(&gb, &data, None, &|_, _| {});
        let rf = RandomForestParams { n_estimators: 5, ..Default::default() };
        let forest = fit_random_forest(&rf, &data, &|_, _| {});
        let probe = &probe[..rows[0].len()];
        for e in [&boosted, &forest] {
            for p in predict_all(e, &rows).into_iter().chain([e.predict_raw(probe)]) {
                prop_assert!((0.0..=1.0).contains(&p), "{}", p);
            }
        }
    }

    #[test]
    fn predictions_do_not_depend_on_row_order((rows, y) in labelled_rows(), seed in any::<u64>()) {
        prop_assume!(y.contains(&0) && y.contains(&1));
        let mut order: Vec<usize> = (0..rows.len()).collect();
        // A seeded permutation.
        let mut s = seed | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let shuffled: Vec<Vec<f32>> = order.iter().map(|&i| rows[i].clone()).collect();
        let y2: Vec<u8> = order.iter().map(|&i| y[i]).collect();
        let fit = |rows: &[Vec<f32>], y: &[u8]| {
            let m = matrix(rows);
            let binned = Binned::new(&m, 255);
            let data = FitData { binned: &binned, y };
            let tree = fit_decision_tree(&DecisionTreeParams { max_depth: Some(4), ..Default::default() }, &data);
            let gb = GradientBoostingParams { n_estimators: 10, random_state: Some(3), ..Default::default() };
            (tree, fit_gradient_boosting(&gb, &data, None, &|_, _| {}).0)
        };
        let (t1, g1) = fit(&rows, &y);
        let (t2, g2) = fit(&shuffled, &y2);
        for r in &rows {
            prop_assert_eq!(t1.predict_raw(r), t2.predict_raw(r));
            prop_assert!((g1.predict_raw(r) - g2.predict_raw(r)).abs() < 1e-6);
        }
    }
}

#[test]
fn xor_is_fitted_although_no_single_split_helps() {
    let rows = vec![
        vec![0.0, 0.0],
        vec![0.0, 1.0],
        vec![1.0, 0.0],
        vec![1.0, 1.0],
    ];
    let y = [0, 1, 1, 0];
    let m = matrix(&rows);
    let binned = Binned::new(&m, 255);
    let tree = fit_decision_tree(
        &DecisionTreeParams::default(),
        &FitData {
            binned: &binned,
            y: &y,
        },
    );
    assert_eq!(predict_all(&tree, &rows), [0.0, 1.0, 1.0, 0.0]);
}

#[test]
fn depth_and_leaf_limits_hold() {
    let rows: Vec<Vec<f32>> = (0..2000)
        .map(|i| vec![(i % 97) as f32, (i % 13) as f32])
        .collect();
    let y: Vec<u8> = (0..2000).map(|i| u8::from((i * 7919) % 3 == 0)).collect();
    let m = matrix(&rows);
    let binned = Binned::new(&m, 255);
    let data = FitData {
        binned: &binned,
        y: &y,
    };
    let p = DecisionTreeParams {
        max_depth: Some(3),
        ..Default::default()
    };
    let t = &fit_decision_tree(&p, &data).trees[0];
    assert!(t.depth() <= 3);
    let p = DecisionTreeParams {
        max_leaf_nodes: Some(5),
        ..Default::default()
    };
    assert_eq!(fit_decision_tree(&p, &data).trees[0].n_leaves(), 5);
    let p = DecisionTreeParams {
        min_samples_leaf: 300,
        ..Default::default()
    };
    let t = &fit_decision_tree(&p, &data).trees[0];
    assert!(t.n_leaves() <= 2000 / 300);
}

/// A random ensemble (its own small generator, so proptest shrinks the seed and the
/// shape): split values and feature values share a small grid, so ties `x ==
/// threshold` are common, and rows carry NaN and infinities.
fn random_ensemble(seed: u64, n_trees: usize, max_depth: usize, n_features: u32) -> Ensemble {
    use predict_buy_model::{Link, Node, Precision, Tree};
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    fn grow(
        nodes: &mut Vec<Node>,
        at: usize,
        depth: usize,
        next: &mut dyn FnMut() -> u64,
        max_depth: usize,
        n_features: u32,
    ) {
        if depth == max_depth || next().is_multiple_of(4) {
            nodes[at] = Node::leaf((next() % 1000) as f32 / 77.0 - 6.0);
            return;
        }
        let left = nodes.len();
        nodes.push(Node::leaf(0.0));
        nodes.push(Node::leaf(0.0));
        nodes[at] = Node {
            feature: (next() % u64::from(n_features)) as u32,
            threshold: (next() % 20) as f32 * 0.5,
            left: left as u32,
            value: 0.0,
        };
        grow(nodes, left, depth + 1, next, max_depth, n_features);
        grow(nodes, left + 1, depth + 1, next, max_depth, n_features);
    }
    let trees = (0..n_trees)
        .map(|_| {
            let mut nodes = vec![Node::leaf(0.0)];
            grow(&mut nodes, 0, 0, &mut next, max_depth, n_features);
            Tree::from_nodes(nodes)
        })
        .collect();
    let link = if seed.is_multiple_of(2) {
        Link::Logit
    } else {
        Link::Average
    };
    // Both summation precisions: format-1 artifacts sum in f32, newer ones in f64.
    let precision = if (seed >> 1).is_multiple_of(2) {
        Precision::F64
    } else {
        Precision::F32
    };
    Ensemble {
        link,
        base_score: -1.5,
        trees,
        precision,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Batch scoring (complete trees in lockstep up to depth 8, the node form beyond)
    /// and one-row scoring give the reference walk's answer bit for bit.
    #[test]
    fn every_scoring_path_agrees_bit_for_bit(
        seed in any::<u64>(),
        n_trees in 1usize..12,
        max_depth in 0usize..12,
        n_features in 1u32..6,
        cells in proptest::collection::vec(prop_oneof![
            8 => (0u8..22).prop_map(|v| f32::from(v) * 0.5),
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
        ], 1..1500),
    ) {
        let e = random_ensemble(seed, n_trees, max_depth, n_features);
        let nf = n_features as usize;
        let rows: Vec<Vec<f32>> = cells.chunks_exact(nf).map(<[f32]>::to_vec).collect();
        let m = matrix(&rows);
        let mut batch = Vec::new();
        e.predict_raw_batch(&m.columns, m.n_rows, &mut batch);
        prop_assert_eq!(batch.len(), rows.len());
        for (r, b) in rows.iter().zip(&batch) {
            let want = e.predict_raw(r);
            prop_assert_eq!(b.to_bits(), want.to_bits());
        }
    }
}

/// Scoring spread over cores joins its stretches of rows in order: every row gets
/// the one-core answer bit for bit, with deep trees (walked row by row, several rows
/// at once) and with shallow ones (the complete form), across several stretches.
#[test]
fn scoring_on_every_core_gives_the_one_core_answers() {
    for (seed, max_depth) in [(3u64, 14usize), (4, 5)] {
        let e = random_ensemble(seed, 7, max_depth, 4);
        let rows: Vec<Vec<f32>> = (0..20_011u32)
            .map(|r| {
                (0..4u32)
                    .map(|f| ((r * 7 + f * 13) % 22) as f32 * 0.5)
                    .collect()
            })
            .collect();
        let m = matrix(&rows);
        let mut one_core = Vec::new();
        e.predict_raw_batch(&m.columns, m.n_rows, &mut one_core);
        let every_core = e.predict_raw_par(&m.columns, m.n_rows);
        assert_eq!(every_core.len(), rows.len());
        for (r, (a, b)) in one_core.iter().zip(&every_core).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "row {r}, depth {max_depth}");
        }
        assert_eq!(
            every_core[20_010].to_bits(),
            e.predict_raw(&rows[20_010]).to_bits()
        );
    }
}

/// The leaf a row lands in.
fn leaf_of(t: &predict_buy_model::Tree, x: &[f32]) -> usize {
    let mut i = 0;
    loop {
        let n = t.node(i);
        if n.feature == u32::MAX {
            return i;
        }
        i = n.left as usize + usize::from(x[n.feature as usize] > n.threshold);
    }
}

/// Cover is the training data that reached each node: a split's is its children's
/// sum, a decision tree's leaf holds exactly the rows that route to it, the root holds
/// every row a tree was grown on (bootstrap draws for a forest, the subsample for
/// boosting).
#[test]
fn cover_counts_the_training_rows_of_each_node() {
    let rows: Vec<Vec<f32>> = (0..1500)
        .map(|i| vec![(i % 97) as f32, (i % 13) as f32, (i % 5) as f32])
        .collect();
    let y: Vec<u8> = (0..1500).map(|i| u8::from((i * 7919) % 3 == 0)).collect();
    let m = matrix(&rows);
    let binned = Binned::new(&m, 255);
    let data = FitData {
        binned: &binned,
        y: &y,
    };
    let sums_hold = |t: &predict_buy_model::Tree| {
        assert!(t.has_cover());
        assert_eq!(t.cover_values().len(), t.len());
        for (i, n) in t.nodes().enumerate() {
            if n.feature != u32::MAX {
                let l = n.left as usize;
                assert_eq!(t.cover(i), t.cover(l) + t.cover(l + 1), "node {i}");
            }
        }
    };

    let p = DecisionTreeParams {
        max_depth: Some(5),
        ..Default::default()
    };
    let tree = &fit_decision_tree(&p, &data).trees[0];
    sums_hold(tree);
    assert_eq!(tree.cover(0), 1500.0);
    let mut reached = vec![0.0; tree.len()];
    for r in &rows {
        reached[leaf_of(tree, r)] += 1.0;
    }
    for (i, n) in tree.nodes().enumerate() {
        if n.feature == u32::MAX {
            assert_eq!(tree.cover(i), reached[i], "leaf {i}");
        }
    }

    let p = RandomForestParams {
        n_estimators: 4,
        max_depth: Some(6),
        ..Default::default()
    };
    for t in &fit_random_forest(&p, &data, &|_, _| {}).trees {
        sums_hold(t);
        // A bootstrap draws as many rows as there are, some more than once.
        assert_eq!(t.cover(0), 1500.0);
    }

    let p = GradientBoostingParams {
        n_estimators: 3,
        subsample: 0.5,
        ..Default::default()
    };
    for t in &fit_gradient_boosting(&p, &data, None, &|_, _| {}).0.trees {
        sums_hold(t);
        assert_eq!(t.cover(0), 750.0);
    }
}
