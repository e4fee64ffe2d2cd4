//! The training journey through the binary: synth → train → evaluate → predict, and the
//! bad inputs each of them must refuse with exit code 2 and a message naming the problem.

mod common;

use common::{TestContext, models};

fn write(ctx: &TestContext, name: &str, text: &str) -> std::path::PathBuf {
    let p = ctx.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn synth_train_evaluate_predict() {
    let ctx = TestContext::new();
    ctx.run([
        "data", "synth", "--rows", "4000", "--seed", "2", "--out", "data",
    ])
    .ok();
    let header = std::fs::read_to_string(ctx.path().join("data/train.csv")).unwrap();
    assert!(header.starts_with(
        "id,Gender,Age,HasDrivingLicense,RegionID,Switch,VehicleAge,PastAccident,AnnualPremium"
    ));

    let report = ctx.run(["train", "--json"]).ok().json();
    for key in [
        "accuracy",
        "roc_auc",
        "pr_auc",
        "log_loss",
        "precision",
        "recall",
        "f1",
        "confusion_matrix",
    ] {
        assert!(
            report["test"].get(key).is_some(),
            "report lacks test.{key}: {report}"
        );
    }
    assert_eq!(report["threshold"]["method"], "f1");
    // train writes to <model.store_path>/model.pbm.
    let model = ctx.path().join("models/model.pbm");
    assert!(model.exists());

    let eval = ctx
        .run([
            "evaluate",
            "--model",
            "models/model.pbm",
            "--data",
            "data/test.csv",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(eval["confusion_matrix"], report["test"]["confusion_matrix"]);

    write(
        &ctx,
        "req.json",
        r#"[{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4},
            {"Gender":"Male","Age":"46","HasDrivingLicense":1,"RegionID":21.0,"Switch":-1,"PastAccident":"Unknown","AnnualPremium":"£1,650.60"}]"#,
    );
    let out = ctx
        .run([
            "predict",
            "--model",
            "models/model.pbm",
            "--input",
            "req.json",
        ])
        .ok()
        .json();
    assert_eq!(out.as_array().unwrap().len(), 2);
    let csv = ctx
        .run([
            "predict",
            "--model",
            "models/model.pbm",
            "--input",
            "data/test.csv",
        ])
        .ok();
    assert!(csv.stdout.starts_with("predicted_class,probability\n"));
}

#[test]
fn bad_inputs_exit_2_and_name_the_problem() {
    let ctx = TestContext::new();
    let model = models().a.clone();
    let model = model.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["train", "--config", "missing.yml"],
            "cannot read config missing.yml",
        ),
        (
            vec!["train", "--config", "unknown-model.yml"],
            "unknown variant `SVC`",
        ),
        (
            vec!["train", "--config", "unknown-param.yml"],
            "unknown field `n_estimator`",
        ),
        (
            vec!["train", "--config", "empty-data.yml"],
            "empty.csv is empty",
        ),
        (
            vec!["train", "--config", "ragged.yml"],
            "ragged.csv line 3: expected 3 fields",
        ),
        (
            vec!["train", "--config", "no-target.yml"],
            "column `Result` named in data.target is not in the header",
        ),
        (
            vec!["train", "--config", "bad-number.yml"],
            "bad.csv line 3, column `b`: `x` is not a number",
        ),
        (
            vec![
                "evaluate",
                "--model",
                "not-a-model.pbm",
                "--data",
                "ragged.csv",
            ],
            "not a predict-buy model",
        ),
        (
            vec![
                "evaluate",
                "--model",
                "truncated.pbm",
                "--data",
                "ragged.csv",
            ],
            "truncated",
        ),
        (
            vec!["predict", "--model", model, "--input", "bad-request.json"],
            "`Age`: 300 is above the maximum 120",
        ),
        (
            vec!["data", "synth", "--rows", "10", "--test-fraction", "1.5"],
            "--test-fraction 1.5",
        ),
    ];
    write(&ctx, "unknown-model.yml", "model: {name: SVC}\n");
    write(&ctx, "empty.csv", "");
    write(&ctx, "ragged.csv", "a,b,y\n1,2,0\n3,1\n");
    write(&ctx, "bad.csv", "a,b,y\n1,2,0\n3,x,1\n");
    write(&ctx, "two.csv", "a,b\n1,0\n2,1\n");
    let cfg = |data: &str, extra: &str| {
        format!("data: {{train_path: {data}{extra}}}\nmodel: {{name: DecisionTreeClassifier}}\n")
    };
    write(
        &ctx,
        "unknown-param.yml",
        "data: {train_path: two.csv}\nmodel: {name: GradientBoostingClassifier, params: {n_estimator: 3}}\n",
    );
    write(&ctx, "empty-data.yml", &cfg("empty.csv", ""));
    write(&ctx, "ragged.yml", &cfg("ragged.csv", ""));
    write(&ctx, "no-target.yml", &cfg("two.csv", ", target: Result"));
    write(
        &ctx,
        "bad-number.yml",
        &cfg("bad.csv", ", columns: {b: {type: numeric}}"),
    );
    write(&ctx, "not-a-model.pbm", "id,Gender\n");
    let bytes = std::fs::read(models().a.clone()).unwrap();
    std::fs::write(ctx.path().join("truncated.pbm"), &bytes[..bytes.len() / 2]).unwrap();
    write(
        &ctx,
        "bad-request.json",
        r#"{"Gender":"Male","Age":300,"HasDrivingLicense":1,"RegionID":1,"Switch":0,"PastAccident":"No","AnnualPremium":1}"#,
    );
    for (args, expected) in cases {
        let run = ctx.run(&args).code(2);
        assert!(
            run.stderr.contains(expected),
            "{args:?}: expected `{expected}` in\n{run}"
        );
        assert!(!run.stderr.contains("panicked"), "{args:?} panicked\n{run}");
    }
}

#[test]
fn a_failed_train_leaves_no_artifact() {
    let ctx = TestContext::new();
    write(&ctx, "ragged.csv", "a,b,y\n1,2,0\n3,1\n");
    write(
        &ctx,
        "c.yml",
        "data: {train_path: ragged.csv}\nmodel: {name: DecisionTreeClassifier, store_path: out}\n",
    );
    ctx.run(["train", "--config", "c.yml"]).code(2);
    assert!(!ctx.path().join("out").exists());
}
