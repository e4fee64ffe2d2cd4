//! Training end to end on synthetic data, and the artifact it produces.

use predict_buy_data::Table;
use predict_buy_model::{ArtifactError, Model, TrainConfig, TrainRequest, train};
use sha2::Digest as _;

fn tables(rows: usize, seed: u64) -> (Table, Table) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    predict_buy_data::synth::write_split(seed, rows, 0.25, &mut a, &mut b).unwrap();
    (
        Table::from_reader(a.as_slice(), "train.csv").unwrap(),
        Table::from_reader(b.as_slice(), "test.csv").unwrap(),
    )
}

fn config(yaml: &str) -> TrainConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn default_config(n_estimators: usize) -> TrainConfig {
    let mut c = config(predict_buy_model::DEFAULT_CONFIG_YAML);
    c.model.params.as_mut().unwrap()["n_estimators"] = n_estimators.into();
    c
}

fn fit(
    cfg: &TrainConfig,
    train_t: &Table,
    test_t: Option<&Table>,
) -> predict_buy_model::TrainOutcome {
    train(
        &TrainRequest {
            config: cfg,
            train: train_t,
            test: test_t,
            data_digest: None,
            trained_at: "2026-01-01T00:00:00Z".into(),
            tool_version: "test".into(),
            git_commit: None,
        },
        &predict_buy_model::Quiet,
    )
    .unwrap()
}

#[test]
fn fixed_seeds_give_the_same_model_and_metrics() {
    let (tr, te) = tables(20_000, 5);
    let cfg = default_config(30);
    let a = fit(&cfg, &tr, Some(&te));
    let b = fit(&cfg, &tr, Some(&te));
    assert_eq!(a.model.to_bytes(), b.model.to_bytes());
    assert_eq!(a.report.test, b.report.test);
    // Pinned so a change in the learner's results is noticed and explained.
    let auc = a.report.test.roc_auc.unwrap();
    assert!((auc - 0.8290).abs() < 0.01, "ROC AUC moved: {auc}");
}

#[test]
fn every_learner_learns() {
    let (tr, te) = tables(12_000, 9);
    for (name, params) in [
        (
            "DecisionTreeClassifier",
            "{max_depth: 6, criterion: entropy}",
        ),
        (
            "RandomForestClassifier",
            "{n_estimators: 30, max_depth: 8, random_state: 1}",
        ),
        (
            "GradientBoostingClassifier",
            "{n_estimators: 40, max_depth: 4, subsample: 0.8, random_state: 1}",
        ),
    ] {
        let base = predict_buy_model::DEFAULT_CONFIG_YAML
            .split("model:")
            .next()
            .unwrap();
        let cfg = config(&format!(
            "{base}model: {{name: {name}, params: {params}}}\n"
        ));
        let out = fit(&cfg, &tr, Some(&te));
        let auc = out.report.test.roc_auc.unwrap();
        assert!(auc > 0.78, "{name}: ROC AUC {auc}");
        let p = out.report.test.log_loss;
        assert!(p.is_finite() && p < 0.5, "{name}: log loss {p}");
    }
}

#[test]
fn original_pipeline_config_works_with_smote_and_honest_probabilities() {
    let (tr, te) = tables(12_000, 3);
    // The seed pipeline's shape: paths, split settings and a model, nothing else.
    let cfg = config(
        "data: {train_path: data/train.csv, test_path: data/test.csv}\n\
         train: {test_size: 0.2, random_state: 42, shuffle: true}\n\
         model: {name: GradientBoostingClassifier, params: {max_depth: null, n_estimators: 10}, store_path: models/}\n",
    );
    let out = fit(&cfg, &tr, Some(&te));
    let smote = out
        .report
        .smote
        .as_ref()
        .expect("the insurance preset resamples");
    assert_eq!(smote.minority_before + smote.synthetic, smote.majority);
    assert_eq!(
        out.report.features,
        [
            "Gender=Female",
            "Gender=Male",
            "Age",
            "RegionID",
            "PastAccident=No",
            "PastAccident=Unknown",
            "PastAccident=Yes",
            "AnnualPremium"
        ]
    );
    assert!(
        out.report.calibration.logit_offset < -1.0,
        "{:?}",
        out.report.calibration
    );
    // Corrected probabilities average near the real positive rate, not SMOTE's 50%.
    let preds = out.model.predict_table(&te).unwrap();
    let mean = preds.iter().map(|p| p.probability).sum::<f64>() / preds.len() as f64;
    assert!((0.05..0.25).contains(&mean), "mean probability {mean}");
}

#[test]
fn the_default_config_beats_the_original_feature_set() {
    let (tr, te) = tables(20_000, 21);
    let ours = fit(&default_config(50), &tr, Some(&te))
        .report
        .test
        .roc_auc
        .unwrap();
    let original = config(
        "train: {random_state: 42}\nmodel: {name: GradientBoostingClassifier, params: {n_estimators: 50, max_depth: 6, random_state: 42}}\n",
    );
    let theirs = fit(&original, &tr, Some(&te)).report.test.roc_auc.unwrap();
    assert!(
        ours > theirs + 0.02,
        "ours {ours} vs original features {theirs}"
    );
}

#[test]
fn artifact_round_trips() {
    let (tr, te) = tables(6_000, 1);
    let out = fit(&default_config(10), &tr, None);
    let bytes = out.model.to_bytes();
    let loaded = Model::from_bytes(&bytes).unwrap();
    assert_eq!(loaded.digest(), out.model.digest());
    let again = loaded.to_bytes();
    let first_diff = again.iter().zip(&bytes).position(|(a, b)| a != b);
    assert!(
        again == bytes,
        "re-serialised artifact differs at byte {first_diff:?}: {}",
        String::from_utf8_lossy(
            &again[first_diff.unwrap_or(0).saturating_sub(80)
                ..(first_diff.unwrap_or(0) + 40).min(again.len())]
        )
    );
    loaded.self_check().unwrap();
    assert_eq!(
        loaded.predict_table(&te).unwrap(),
        out.model.predict_table(&te).unwrap()
    );
    assert!(!loaded.golden().is_empty());
}

#[test]
fn corrupt_truncated_and_newer_artifacts_are_refused() {
    let (tr, _) = tables(4_000, 2);
    let bytes = fit(&default_config(5), &tr, None).model.to_bytes();

    assert!(matches!(
        Model::from_bytes(&[]),
        Err(ArtifactError::NotAnArtifact)
    ));
    assert!(matches!(
        Model::from_bytes(b"id,Gender\n1,Male\n"),
        Err(ArtifactError::NotAnArtifact)
    ));
    assert!(matches!(
        Model::from_bytes(&bytes[..bytes.len() - 1]),
        Err(ArtifactError::Truncated { .. })
    ));
    assert!(matches!(
        Model::from_bytes(&bytes[..30]),
        Err(ArtifactError::Truncated { .. })
    ));

    // A flipped bit anywhere is corruption, whatever field it lands in: the version
    // field included, which must not pass for a newer format.
    let payload_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let header = 20;
    for (at, what) in [
        (9, "the version field"),
        (header + payload_len / 2, "the payload"),
        (bytes.len() - 1, "the checksum"),
    ] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x20;
        let err = Model::from_bytes(&flipped).unwrap_err();
        assert!(matches!(err, ArtifactError::Checksum), "{what}: {err}");
        assert!(err.to_string().starts_with("corrupt:"), "{what}: {err}");
    }
    for (at, field) in [
        (3, "magic bytes"),
        (13, "payload length"),
        (19, "payload length"),
    ] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        let err = Model::from_bytes(&flipped).unwrap_err();
        assert!(
            matches!(err, ArtifactError::CorruptHeader { field: f } if f == field),
            "byte {at}: {err}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
    let mut longer = bytes.clone();
    longer.push(b'\n');
    let err = Model::from_bytes(&longer).unwrap_err();
    assert!(
        matches!(err, ArtifactError::Oversized { expected, actual } if actual == expected + 1),
        "{err}"
    );

    // A genuinely newer format: an intact file, checksum and all, with a higher version.
    let mut newer = bytes[..bytes.len() - 32].to_vec();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    let sum = sha2::Sha256::digest(&newer);
    newer.extend_from_slice(&sum);
    let err = Model::from_bytes(&newer).unwrap_err();
    assert!(matches!(err, ArtifactError::NewerFormat { found: 99, .. }));
    assert!(err.to_string().contains("upgrade predict-buy"), "{err}");
}

#[test]
fn records_are_predicted_like_the_original_api() {
    let (tr, _) = tables(6_000, 4);
    let model = fit(&default_config(10), &tr, None).model;
    let ok = serde_json::json!({"Gender": "Female", "Age": 46, "HasDrivingLicense": 1, "RegionID": 21.0,
        "Switch": 0, "PastAccident": "Yes", "AnnualPremium": 2305.4});
    let p1 = model.predict_json(ok.as_object().unwrap()).unwrap();
    let as_strings = serde_json::json!({"Gender": "Female", "Age": "46", "HasDrivingLicense": "1", "RegionID": "21.0",
        "Switch": "0", "PastAccident": "Yes", "AnnualPremium": "£2,305.40"});
    assert_eq!(
        model.predict_json(as_strings.as_object().unwrap()).unwrap(),
        p1
    );
    let unknown = serde_json::json!({"Gender": "Other", "Age": 46, "HasDrivingLicense": 1, "RegionID": 21.0,
        "Switch": -1, "PastAccident": "Unknown", "AnnualPremium": 1650.6});
    assert!(model.predict_json(unknown.as_object().unwrap()).is_ok());
    let bad = serde_json::json!({"Gender": "Male", "Age": 300, "RegionID": [1], "Switch": 0,
        "PastAccident": "No", "AnnualPremium": "lots"});
    let errs = model.predict_json(bad.as_object().unwrap()).unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["Age", "HasDrivingLicense", "RegionID", "AnnualPremium"]
    );
}

#[test]
fn bad_configs_name_the_key() {
    let (tr, _) = tables(2_000, 1);
    let cfg = config("model: {name: GradientBoostingClassifier, params: {n_estimator: 10}}\n");
    let req = TrainRequest {
        config: &cfg,
        train: &tr,
        test: None,
        data_digest: None,
        trained_at: String::new(),
        tool_version: String::new(),
        git_commit: None,
    };
    let err = train(&req, &predict_buy_model::Quiet)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.params") && err.contains("unknown field `n_estimator`"),
        "{err}"
    );
}
