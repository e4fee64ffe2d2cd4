//! Training is a pure function of its data, config and seeds: not of how many threads
//! run it. SMOTE's neighbour search, a forest's trees and boosting's histograms are all
//! spread over rayon's pool, so each learner is trained, with SMOTE, in a 1-thread and a
//! 4-thread pool, and the artifacts must be the same bytes.
//!
//! The artifacts' digests are also pinned, so that any change to what training produces
//! (the synthetic data, cleaning, SMOTE, binning, the grower, the artifact's encoding)
//! fails here instead of slipping through as "still about as accurate".
//!
//! To change the output on purpose: make the change, run
//! `cargo test -p predict-buy-model --test determinism`, check that the new digests
//! are expected (the failure prints them), paste them into `PINNED` below, and say in
//! the commit message why training's output changed.

use predict_buy_data::Table;
use predict_buy_model::{TrainConfig, TrainRequest, digest_of, train};

/// `sha256` of each learner's artifact as format 2 wrote it (the trees as JSON): these
/// did not move when format 3 came, which is what shows its trees are the same.
const PINNED_FORMAT_2: [(&str, &str); 3] = [
    (
        "DecisionTreeClassifier",
        "sha256:d158e2b33c330e429656dc063cb94c610a1ab1c312009a0c88dd3b12adeedb23",
    ),
    (
        "RandomForestClassifier",
        "sha256:6babade021acb67a68920fbe5903927dd94d45caac58dbafabcbf1956e54c7f1",
    ),
    (
        "GradientBoostingClassifier",
        "sha256:e9fb80df58133d9c51c9807f2e195de0fb3706ab84426b43c712ade77c641979",
    ),
];

/// `sha256` of each learner's artifact bytes, trained as [`artifact`] trains it.
const PINNED: [(&str, &str); 3] = [
    (
        "DecisionTreeClassifier",
        "sha256:6776ff46114077abd2c842a76caf154e77ab9286319b849d83183450deea35d6",
    ),
    (
        "RandomForestClassifier",
        "sha256:0c67819f3f6b4544e1e39b8684e1ac8848ce73bca0f9f7dd5357438fd574b7e9",
    ),
    (
        "GradientBoostingClassifier",
        "sha256:27e4f7fd633dde28a5724fe4fc703e053f67d490a0a5b320ddae4346ef531955",
    ),
];

/// The model's artifact as format 2 framed it: the payload's JSON, trees included.
fn format_2_bytes(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut payload = predict_buy_model::Model::from_bytes(bytes)
        .unwrap()
        .payload()
        .clone();
    payload.format_version = 2;
    let json = serde_json::to_vec(&payload).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(predict_buy_model::MAGIC);
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn table() -> Table {
    let (mut train_csv, mut test_csv) = (Vec::new(), Vec::new());
    predict_buy_data::synth::write_split(17, 6_000, 0.25, &mut train_csv, &mut test_csv).unwrap();
    Table::from_reader(train_csv.as_slice(), "train.csv").unwrap()
}

/// The whole of training, held-out split and threshold included; the artifact embeds
/// a training time, fixed here so that the bytes depend on nothing but the inputs.
fn artifact(table: &Table, name: &str, params: &str, threads: usize) -> Vec<u8> {
    let base = predict_buy_model::DEFAULT_CONFIG_YAML
        .split("train:")
        .next()
        .unwrap();
    let yaml = format!(
        "{base}train: {{test_size: 0.2, random_state: 7, smote: {{k: 5, ratio: 0.8}}}}\n\
         model: {{name: {name}, params: {params}}}\n"
    );
    let config: TrainConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let request = TrainRequest {
        config: &config,
        train: table,
        test: None,
        data_digest: None,
        trained_at: "2026-01-01T00:00:00Z".into(),
        tool_version: "determinism-test".into(),
        git_commit: None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let outcome = pool
        .install(|| train(&request, &predict_buy_model::Quiet))
        .unwrap();
    let smote = outcome.report.smote.as_ref().expect("SMOTE is on");
    assert!(smote.synthetic > 0, "{name}: SMOTE added no rows");
    outcome.model.to_bytes()
}

#[test]
fn training_gives_the_same_bytes_on_one_thread_and_on_four() {
    let table = table();
    let learners = [
        (
            "DecisionTreeClassifier",
            "{max_depth: 8, min_samples_leaf: 5}",
        ),
        (
            "RandomForestClassifier",
            "{n_estimators: 12, max_depth: 10, max_features: sqrt, random_state: 3}",
        ),
        (
            "GradientBoostingClassifier",
            "{n_estimators: 25, max_depth: 4, subsample: 0.8, random_state: 3}",
        ),
    ];
    let mut digests = Vec::new();
    let mut format_2 = Vec::new();
    for (name, params) in learners {
        let one = artifact(&table, name, params, 1);
        let four = artifact(&table, name, params, 4);
        let first_diff = one.iter().zip(&four).position(|(a, b)| a != b);
        assert!(
            one == four,
            "{name}: 1 and 4 threads differ (lengths {} and {}, first difference at byte {first_diff:?})",
            one.len(),
            four.len()
        );
        digests.push((name, digest_of(&one)));
        format_2.push((name, digest_of(&format_2_bytes(&one))));
    }
    let pinned: Vec<(&str, String)> = PINNED_FORMAT_2
        .iter()
        .map(|&(n, d)| (n, d.to_string()))
        .collect();
    assert_eq!(format_2, pinned, "the trees or metadata changed");
    let pinned: Vec<(&str, String)> = PINNED.iter().map(|&(n, d)| (n, d.to_string())).collect();
    assert_eq!(
        digests, pinned,
        "training's output changed; if that was intended, update PINNED (see the file's doc)"
    );
}
