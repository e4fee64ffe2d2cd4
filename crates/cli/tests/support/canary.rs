//! What the canary tests share: a model that says everyone buys, and realistic
//! request bodies.

use std::sync::OnceLock;

use crate::common::TestContext;

/// A model trained on the same data with the label inverted (`positive_label: "0"`):
/// it says nearly everyone buys, the "wildly different positive rate" a canary must
/// catch.
pub fn everyone_buys() -> &'static std::path::Path {
    static MODEL: OnceLock<(TestContext, std::path::PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let ctx = TestContext::new();
        ctx.run([
            "data", "synth", "--rows", "3000", "--seed", "7", "--out", "data",
        ])
        .ok();
        std::fs::write(
            ctx.path().join("bad.yml"),
            "data:\n  train_path: data/train.csv\n  test_path: data/test.csv\n  positive_label: \"0\"\n\
             train:\n  test_size: 0.2\n  random_state: 1\n\
             model:\n  name: GradientBoostingClassifier\n  \
             params: {n_estimators: 5, max_depth: 3, random_state: 1}\n  store_path: models\n",
        )
        .unwrap();
        ctx.run(["train", "--config", "bad.yml", "--out", "models/bad.pbm"])
            .ok();
        let path = ctx.path().join("models/bad.pbm");
        (ctx, path)
    });
    path
}

/// Request bodies: the synthetic test rows with every field the API requires.
pub fn bodies() -> &'static [String] {
    static BODIES: OnceLock<Vec<String>> = OnceLock::new();
    BODIES.get_or_init(|| {
        let ctx = TestContext::new();
        ctx.run([
            "data", "synth", "--rows", "2000", "--seed", "11", "--out", "data",
        ])
        .ok();
        let text = std::fs::read_to_string(ctx.path().join("data/test.csv")).unwrap();
        let mut rows = text.lines();
        let header: Vec<&str> = rows.next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let wanted = [
            "Gender",
            "Age",
            "HasDrivingLicense",
            "RegionID",
            "Switch",
            "PastAccident",
        ];
        let idx: Vec<usize> = wanted.iter().map(|w| col(w)).collect();
        let mut out = Vec::new();
        for line in rows {
            // AnnualPremium is the only quoted field (`"£1,169.50 "`); split it off.
            let Some((head, premium)) = line.split_once(",\"") else {
                continue;
            };
            let premium = premium.split('"').next().unwrap_or("").trim();
            let fields: Vec<&str> = head.split(',').collect();
            let values: Vec<&str> = idx.iter().map(|&i| fields[i]).collect();
            if values.iter().any(|v| v.is_empty()) || premium.is_empty() {
                continue;
            }
            let mut body = serde_json::Map::new();
            for (k, v) in wanted.iter().zip(values) {
                body.insert((*k).into(), serde_json::Value::String(v.into()));
            }
            body.insert("AnnualPremium".into(), premium.into());
            out.push(serde_json::Value::Object(body).to_string());
        }
        assert!(out.len() > 50, "only {} complete rows", out.len());
        out
    })
}
