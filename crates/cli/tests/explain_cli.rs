//! `predict --explain`: contribution columns (CSV) and fields (JSON) that add up to the
//! score, beside the same predictions `predict` gives without the flag.

mod common;

use common::{TestContext, models};

fn parse(s: &str) -> f64 {
    s.parse().unwrap_or_else(|e| panic!("`{s}`: {e}"))
}

#[test]
fn csv_rows_get_contribution_columns_that_add_up() {
    let ctx = TestContext::new();
    ctx.run([
        "data", "synth", "--rows", "200", "--seed", "9", "--out", "d",
    ])
    .ok();
    let model = models().a.display().to_string();
    let plain = ctx
        .run([
            "predict",
            "--model",
            &model,
            "--input",
            "d/test.csv",
            "--keep",
            "id",
        ])
        .ok();
    let explained = ctx
        .run([
            "predict",
            "--model",
            &model,
            "--input",
            "d/test.csv",
            "--keep",
            "id",
            "--explain",
        ])
        .ok();
    assert!(explained.stderr.contains("log-odds"), "{explained}");
    let mut lines = explained.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header[..5],
        [
            "id",
            "predicted_class",
            "probability",
            "base_value",
            "score"
        ]
    );
    let fields: Vec<&str> = header[5..].to_vec();
    assert!(fields.contains(&"contribution_Age"), "{header:?}");
    assert!(fields.contains(&"contribution_PastAccident"), "{header:?}");
    assert!(fields.iter().all(|f| f.starts_with("contribution_")));

    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let plain_rows: Vec<&str> = plain.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), plain_rows.len());
    assert!(!rows.is_empty());
    for (row, plain) in rows.iter().zip(&plain_rows) {
        // The prediction columns are exactly those of `predict` without the flag.
        assert_eq!(row[..3].join(","), *plain);
        let base = parse(row[3]);
        let score = parse(row[4]);
        let sum: f64 = row[5..].iter().map(|v| parse(v)).sum();
        assert!((base + sum - score).abs() < 1e-9, "{row:?}");
        let p = parse(row[2]);
        assert!((1.0 / (1.0 + (-score).exp()) - p).abs() < 1e-12, "{row:?}");
    }
}

#[test]
fn json_records_get_a_contributions_object() {
    let ctx = TestContext::new();
    let model = models().a.display().to_string();
    std::fs::write(
        ctx.path().join("two.json"),
        r#"[{"id": 7, "Gender": "Male", "Age": 44, "HasDrivingLicense": 1, "RegionID": 28,
             "Switch": 0, "PastAccident": "Yes", "AnnualPremium": "£1,200.00"},
            {"id": 8, "Gender": null, "Age": 23, "HasDrivingLicense": 1, "RegionID": 3,
             "Switch": 1, "PastAccident": "No", "AnnualPremium": 131.5}]"#,
    )
    .unwrap();
    let run = ctx
        .run([
            "predict",
            "--model",
            &model,
            "--input",
            "two.json",
            "--keep",
            "id",
            "--explain",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let plain = ctx
        .run(["predict", "--model", &model, "--input", "two.json"])
        .ok();
    let p: serde_json::Value = serde_json::from_str(&plain.stdout).unwrap();
    for (i, e) in v.as_array().unwrap().iter().enumerate() {
        assert_eq!(e["id"], 7 + i);
        assert_eq!(e["probability"], p[i]["probability"]);
        assert_eq!(e["units"], "log_odds");
        let c = e["contributions"].as_object().unwrap();
        assert!(
            c.contains_key("Gender") && c.contains_key("AnnualPremium"),
            "{e}"
        );
        let sum: f64 = c.values().map(|v| v.as_f64().unwrap()).sum();
        let (base, score) = (
            e["base_value"].as_f64().unwrap(),
            e["score"].as_f64().unwrap(),
        );
        assert!((base + sum - score).abs() < 1e-9, "{e}");
    }
    // The two customers differ, and so do their reasons.
    assert_ne!(v[0]["contributions"], v[1]["contributions"]);

    std::fs::write(ctx.path().join("bad.json"), r#"{"Age": [1]}"#).unwrap();
    let bad = ctx
        .run([
            "predict",
            "--model",
            &model,
            "--input",
            "bad.json",
            "--explain",
        ])
        .code(2);
    let plain_bad = ctx
        .run(["predict", "--model", &model, "--input", "bad.json"])
        .code(2);
    assert!(bad.stderr.contains("`Age`"), "{bad}");
    assert_eq!(bad.stderr.lines().last(), plain_bad.stderr.lines().last());
}
