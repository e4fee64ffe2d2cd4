//! Explanations against their definition: Shapley values of `v(S) = E[f(x) | x_S]`
//! (the path-dependent expectation, which follows cover at splits on unknown features),
//! computed by brute force over every subset of features on small trees and
//! ensembles; and, on trained models, the identity `base + Σ contributions = score`
//! and the link to `/predict`'s probability.

use predict_buy_data::Table;
use predict_buy_model::{
    Ensemble, ExplainError, ExplainFailure, Explainer, Link, Model, Node, Precision, TrainConfig,
    TrainRequest, Tree, Units, expected_value, tree_shap,
};
use proptest::prelude::*;
use sha2::Digest as _;

/// `E[f(x) | x_S]` of one tree: features in `known` follow `x`, others split the
/// weight by cover.
fn conditional(t: &Tree, i: usize, x: &[f32], known: u32) -> f64 {
    let n = t.node(i);
    if n.feature == u32::MAX {
        return f64::from(n.value);
    }
    let l = n.left as usize;
    if known >> n.feature & 1 == 1 {
        return conditional(
            t,
            l + usize::from(x[n.feature as usize] > n.threshold),
            x,
            known,
        );
    }
    (t.cover(l) * conditional(t, l, x, known) + t.cover(l + 1) * conditional(t, l + 1, x, known))
        / t.cover(i)
}

/// Shapley values by enumerating every subset of the `m` features.
fn brute_force(v: impl Fn(u32) -> f64, m: usize) -> Vec<f64> {
    let fact = |k: usize| (1..=k).map(|i| i as f64).product::<f64>();
    let mut phi = vec![0.0; m];
    for (i, p) in phi.iter_mut().enumerate() {
        for s in 0u32..1 << m {
            if s >> i & 1 == 1 {
                continue;
            }
            let k = s.count_ones() as usize;
            let weight = fact(k) * fact(m - k - 1) / fact(m);
            *p += weight * (v(s | 1 << i) - v(s));
        }
    }
    phi
}

/// A random tree over `n_features` features, thresholds and values on small grids (so
/// features repeat along paths and rows tie with thresholds), covers positive integers
/// that add up from the leaves as training's do.
fn random_tree(next: &mut dyn FnMut() -> u64, max_depth: usize, n_features: u32) -> Tree {
    /// Nodes and their covers as the tree is built.
    type Building = (Vec<Node>, Vec<f64>);
    fn grow(
        t: &mut Building,
        at: usize,
        depth: usize,
        next: &mut dyn FnMut() -> u64,
        max_depth: usize,
        n_features: u32,
    ) -> f64 {
        if depth == max_depth || next().is_multiple_of(5) {
            t.0[at] = Node::leaf((next() % 1000) as f32 / 77.0 - 6.0);
            t.1[at] = (1 + next() % 40) as f64;
            return t.1[at];
        }
        let left = t.0.len();
        t.0.extend([Node::leaf(0.0), Node::leaf(0.0)]);
        t.1.extend([0.0, 0.0]);
        t.0[at] = Node {
            feature: (next() % u64::from(n_features)) as u32,
            threshold: (next() % 6) as f32 * 0.5,
            left: left as u32,
            value: 0.0,
        };
        let c = grow(t, left, depth + 1, next, max_depth, n_features)
            + grow(t, left + 1, depth + 1, next, max_depth, n_features);
        t.1[at] = c;
        c
    }
    let mut t = (vec![Node::leaf(0.0)], vec![0.0]);
    grow(&mut t, 0, 0, next, max_depth, n_features);
    Tree::new(t.0, t.1)
}

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

fn close(a: &[f64], b: &[f64], tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            (x - y).abs() <= tol,
            "feature {}: {} vs {} ({:?} vs {:?})",
            i,
            x,
            y,
            a,
            b
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Algorithm 2 on one tree gives the brute-force Shapley values.
    #[test]
    fn tree_shap_is_the_shapley_value(
        seed in any::<u64>(),
        max_depth in 0usize..7,
        n_features in 1u32..6,
        cells in proptest::collection::vec((0u8..7).prop_map(|v| f32::from(v) * 0.5), 6),
    ) {
        let t = random_tree(&mut rng(seed), max_depth, n_features);
        let m = n_features as usize;
        let x = &cells[..m];
        let want = brute_force(|s| conditional(&t, 0, x, s), m);
        let mut got = vec![0.0; m];
        tree_shap(&t, x, &mut got);
        close(&got, &want, 1e-9)?;
        // v(∅) is the expected value, and the parts add up to the prediction.
        prop_assert!((expected_value(&t) - conditional(&t, 0, x, 0)).abs() < 1e-9);
        let total = expected_value(&t) + got.iter().sum::<f64>();
        prop_assert!((total - f64::from(t.predict(x))).abs() < 1e-9);
    }

    /// The explainer (tables for these trees) on a forest's mean and a booster's sum
    /// gives the brute-force Shapley values of the ensemble, and they add up to the
    /// ensemble's score.
    #[test]
    fn ensembles_are_explained_exactly(
        seed in any::<u64>(),
        n_trees in 1usize..6,
        max_depth in 0usize..6,
        n_features in 1u32..6,
        boosting in any::<bool>(),
        cells in proptest::collection::vec(prop_oneof![
            6 => (0u8..7).prop_map(|v| f32::from(v) * 0.5),
            1 => Just(f32::NAN),
        ], 6),
    ) {
        let mut next = rng(seed);
        let trees: Vec<Tree> = (0..n_trees)
            .map(|_| random_tree(&mut next, max_depth, n_features))
            .collect();
        let e = Ensemble {
            link: if boosting { Link::Logit } else { Link::Average },
            base_score: -1.25,
            trees,
            precision: Precision::F64,
        };
        let m = n_features as usize;
        let x = &cells[..m];
        let v = |s: u32| {
            let sum: f64 = e.trees.iter().map(|t| conditional(t, 0, x, s)).sum();
            if boosting { e.base_score + sum } else { sum / n_trees as f64 }
        };
        let want = brute_force(v, m);
        let explainer = Explainer::new(&e, m).unwrap();
        let mut got = vec![0.0; m];
        explainer.explain(x, &mut got);
        close(&got, &want, 1e-9)?;
        prop_assert!((explainer.expected_value() - v(0)).abs() < 1e-9);
        let total = explainer.expected_value() + got.iter().sum::<f64>();
        prop_assert!(
            (total - e.predict_margin(x)).abs() < 1e-9,
            "{} vs {}", total, e.predict_margin(x)
        );
    }
}

fn synth(rows: usize) -> (Table, Table) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    predict_buy_data::synth::write_split(5, rows, 0.25, &mut train, &mut test).unwrap();
    (
        Table::from_reader(train.as_slice(), "train.csv").unwrap(),
        Table::from_reader(test.as_slice(), "test.csv").unwrap(),
    )
}

fn trained(name: &str, params: &str, smote: bool) -> (Model, Table) {
    let (train, test) = synth(4_000);
    let base = predict_buy_model::DEFAULT_CONFIG_YAML
        .split("train:")
        .next()
        .unwrap();
    let smote = if smote {
        ", smote: {k: 5, ratio: 1.0}"
    } else {
        ""
    };
    let yaml = format!(
        "{base}train: {{test_size: 0.2, random_state: 7{smote}}}\n\
         model: {{name: {name}, params: {params}}}\n"
    );
    let config: TrainConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let request = TrainRequest {
        config: &config,
        train: &train,
        test: Some(&test),
        data_digest: None,
        trained_at: "2026-01-01T00:00:00Z".into(),
        tool_version: "explain-test".into(),
        git_commit: None,
    };
    let outcome = predict_buy_model::train(&request, &predict_buy_model::Quiet).unwrap();
    (outcome.model, test)
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// On trained models (boosting with SMOTE's calibration offset, a forest, a tree), every
/// test row's contributions add up to the score, one per input field, and the score is
/// what `/predict` turns into its probability.
#[test]
fn trained_models_add_up_and_match_predict() {
    let learners = [
        (
            "GradientBoostingClassifier",
            "{n_estimators: 40, max_depth: 4}",
            true,
        ),
        (
            "RandomForestClassifier",
            "{n_estimators: 10, max_depth: 8}",
            false,
        ),
        ("DecisionTreeClassifier", "{max_depth: 6}", true),
    ];
    for (name, params, smote) in learners {
        let (model, test) = trained(name, params, smote);
        let fields: Vec<String> = model.input_fields().into_iter().map(|f| f.name).collect();
        let explanations = model.explain_table(&test).unwrap();
        let predictions = model.predict_table(&test).unwrap();
        assert_eq!(explanations.len(), test.n_rows());
        let offset = model.payload().calibration.logit_offset;
        for (e, p) in explanations.iter().zip(&predictions) {
            let names: Vec<&String> = e.contributions.iter().map(|(n, _)| n).collect();
            assert_eq!(names, fields.iter().collect::<Vec<_>>(), "{name}");
            let total = e.base_value + e.contributions.iter().map(|c| c.1).sum::<f64>();
            assert!(
                (total - e.score).abs() < 1e-9,
                "{name}: {total} vs {}",
                e.score
            );
            assert_eq!(e.probability.to_bits(), p.probability.to_bits(), "{name}");
            assert_eq!(e.predicted_class, p.predicted_class, "{name}");
            match e.units {
                Units::LogOdds => {
                    // The calibration offset is part of the base value.
                    assert!((logit(e.probability) - e.score).abs() < 1e-9, "{name}");
                }
                Units::Probability => {
                    let p = e.score.clamp(1e-9, 1.0 - 1e-9);
                    let calibrated = 1.0 / (1.0 + (-(logit(p) + offset)).exp());
                    let want = if offset == 0.0 { e.score } else { calibrated };
                    assert!((want - e.probability).abs() < 1e-12, "{name}");
                }
            }
        }
        // Some field matters for some row: the values are not all zero.
        assert!(
            explanations
                .iter()
                .any(|e| e.contributions.iter().any(|c| c.1.abs() > 1e-3)),
            "{name}"
        );
        let expected_units = if name.starts_with("Gradient") {
            Units::LogOdds
        } else {
            Units::Probability
        };
        assert_eq!(explanations[0].units, expected_units);
    }
}

/// A JSON record is explained with exactly `/predict`'s validation, and its
/// explanation agrees with the table path.
#[test]
fn json_records_are_validated_like_predict() {
    let (model, _) = trained(
        "GradientBoostingClassifier",
        "{n_estimators: 10, max_depth: 3}",
        false,
    );
    let good = serde_json::json!({
        "Gender": "Female", "Age": 46, "HasDrivingLicense": 1, "RegionID": 21.0,
        "Switch": 0, "PastAccident": "Yes", "AnnualPremium": "£2,305.40",
        "VehicleAge": "1-2 Year", "SalesChannelID": 26, "DaysSinceCreated": 100
    });
    let record = good.as_object().unwrap();
    let e = model.explain_json(record).unwrap();
    let p = model.predict_json(record).unwrap();
    assert_eq!(e.probability.to_bits(), p.probability.to_bits());
    let total = e.base_value + e.contributions.iter().map(|c| c.1).sum::<f64>();
    assert!((total - e.score).abs() < 1e-9);

    let mut bad = record.clone();
    bad.insert("Age".into(), serde_json::json!([1]));
    bad.remove("Gender");
    let want = model.predict_json(&bad).unwrap_err();
    match model.explain_json(&bad) {
        Err(ExplainFailure::Fields(got)) => assert_eq!(got, want),
        other => panic!("expected field errors, got {other:?}"),
    }
}

/// The artifact frame, as the format documents it.
fn frame(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(predict_buy_model::MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// A format-1 artifact (no cover, `f32` sums) still loads, predicts and writes back
/// as format 1; explaining it says the model predates explanations.
#[test]
fn format_1_artifacts_predict_but_refuse_to_explain() {
    let (model, test) = trained(
        "GradientBoostingClassifier",
        "{n_estimators: 10, max_depth: 3}",
        false,
    );
    let bytes = model.to_bytes();
    assert_eq!(bytes[8..12], 3u32.to_le_bytes());
    // The payload as format 2 wrote it, trees in JSON.
    let mut payload = serde_json::to_value(model.payload()).unwrap();
    payload["format_version"] = 1.into();
    let ensemble = payload["ensemble"].as_object_mut().unwrap();
    assert_eq!(ensemble.remove("precision"), Some("f64".into()));
    for tree in ensemble["trees"].as_array_mut().unwrap() {
        assert!(tree.as_object_mut().unwrap().remove("cover").is_some());
    }
    let old = frame(1, &serde_json::to_vec(&payload).unwrap());
    let loaded = Model::from_bytes(&old).unwrap();

    let now = model.predict_table(&test).unwrap();
    let then = loaded.predict_table(&test).unwrap();
    for (a, b) in now.iter().zip(&then) {
        // The same trees, summed in f32 instead of f64.
        assert!((a.probability - b.probability).abs() < 1e-5);
    }
    let err = loaded.explainer().unwrap_err();
    assert_eq!(err, ExplainError::NoCover { tree: 0 });
    assert!(err.to_string().contains("predates explanations"), "{err}");
    assert!(matches!(
        loaded.explain_table(&test),
        Err(predict_buy_model::ExplainTableError::Model(_))
    ));

    // Written back, it is still format 1 (and reloads).
    let again = loaded.to_bytes();
    assert_eq!(again[8..12], 1u32.to_le_bytes());
    let reloaded = Model::from_bytes(&again).unwrap();
    assert_eq!(reloaded.to_bytes(), again);
}

/// Damaged cover is refused at load, not divided by later.
#[test]
fn damaged_cover_is_refused_at_load() {
    let (model, _) = trained(
        "GradientBoostingClassifier",
        "{n_estimators: 3, max_depth: 2}",
        false,
    );
    let mut payload = serde_json::to_value(model.payload()).unwrap();
    payload["format_version"] = 2.into();
    let cover = |p: &mut serde_json::Value| {
        p["ensemble"]["trees"][1]["cover"]
            .as_array_mut()
            .unwrap()
            .clone()
    };
    let mut damaged = cover(&mut payload);
    damaged[0] = 0.0.into();
    payload["ensemble"]["trees"][1]["cover"] = damaged.clone().into();
    let err = Model::from_bytes(&frame(2, &serde_json::to_vec(&payload).unwrap())).unwrap_err();
    assert!(err.to_string().contains("tree 1"), "{err}");
    assert!(err.to_string().contains("cover"), "{err}");
    damaged.remove(0);
    payload["ensemble"]["trees"][1]["cover"] = damaged.into();
    let err = Model::from_bytes(&frame(2, &serde_json::to_vec(&payload).unwrap())).unwrap_err();
    assert!(err.to_string().contains("cover values"), "{err}");
}

/// A path through more distinct features than the tables take (12) is explained by
/// Algorithm 2 itself inside the explainer, with the same exactness.
#[test]
fn deep_paths_fall_back_to_algorithm_2_exactly() {
    let m = 14usize;
    let mut next = rng(99);
    // A chain: split k on feature k sends `x_k <= 0.5` to a leaf, the rest onwards.
    let mut nodes = Vec::new();
    let mut cover = Vec::new();
    let mut remaining = 4000.0;
    for k in 0..m {
        // Its children are the next two nodes: the leaf, then what follows.
        let left = nodes.len() + 1;
        nodes.push(Node {
            feature: k as u32,
            threshold: 0.5,
            left: left as u32,
            value: 0.0,
        });
        cover.push(remaining);
        let leaf_cover = (1 + next() % 200) as f64;
        nodes.push(Node::leaf((next() % 100) as f32 / 10.0 - 5.0));
        cover.push(leaf_cover);
        remaining -= leaf_cover;
    }
    nodes.push(Node::leaf(2.5));
    cover.push(remaining);
    let tree = Tree::new(nodes, cover);
    tree.validate(m).unwrap();
    let e = Ensemble {
        link: Link::Logit,
        base_score: 0.25,
        trees: vec![tree.clone(), tree],
        precision: Precision::F64,
    };
    let x: Vec<f32> = (0..m).map(|k| if k % 5 == 4 { 0.0 } else { 1.0 }).collect();
    let v = |s: u32| e.base_score + 2.0 * conditional(&e.trees[0], 0, &x, s);
    let want = brute_force(v, m);
    let explainer = Explainer::new(&e, m).unwrap();
    let mut got = vec![0.0; m];
    explainer.explain(&x, &mut got);
    close(&got, &want, 1e-9).unwrap();
    let total = explainer.expected_value() + got.iter().sum::<f64>();
    assert!((total - e.predict_margin(&x)).abs() < 1e-9);
}
