//! Snapshots of what the data, training and prediction commands and quickstart print,
//! in text and `--json`, and of their answers to bad input. Filters (common::
//! insta_settings) hide temp paths, digests, times, durations and ports; everything
//! else is compared exactly, so a changed message or report shows up in review.

mod common;

use common::{Run, TestContext, free_port, insta_settings};

fn write(ctx: &TestContext, name: &str, text: &str) {
    std::fs::write(ctx.path().join(name), text).unwrap();
}

/// Exit code and both streams, as one snapshot.
fn shown(run: &Run) -> String {
    run.to_string()
}

const SMALL: &str = "data:\n  train_path: data/train.csv\n  test_path: data/test.csv\n\
    train:\n  test_size: 0.2\n  random_state: 1\n\
    model:\n  name: GradientBoostingClassifier\n  \
    params: {n_estimators: 5, max_depth: 3, random_state: 1}\n  store_path: models\n";

#[test]
fn the_training_journey() {
    let ctx = TestContext::new();
    let settings = insta_settings(&ctx);
    let _guard = settings.bind_to_scope();

    let synth = ctx.run([
        "data", "synth", "--rows", "2000", "--seed", "11", "--out", "data",
    ]);
    insta::assert_snapshot!("data_synth", shown(&synth));
    let synth_json = ctx.run([
        "data", "synth", "--rows", "2000", "--seed", "11", "--out", "data", "--json",
    ]);
    insta::assert_snapshot!("data_synth_json", shown(&synth_json));

    write(&ctx, "small.yml", SMALL);
    let train = ctx.run(["train", "--config", "small.yml"]);
    insta::assert_snapshot!("train", shown(&train));
    let train_json = ctx.run(["train", "--config", "small.yml", "--json"]);
    insta::assert_snapshot!("train_json", shown(&train_json));

    let evaluate = ctx.run([
        "evaluate",
        "--model",
        "models/model.pbm",
        "--data",
        "data/test.csv",
    ]);
    insta::assert_snapshot!("evaluate", shown(&evaluate));
    let evaluate_json = ctx.run([
        "evaluate",
        "--model",
        "models/model.pbm",
        "--data",
        "data/test.csv",
        "--json",
    ]);
    insta::assert_snapshot!("evaluate_json", shown(&evaluate_json));

    write(
        &ctx,
        "few.csv",
        "id,Gender,Age,HasDrivingLicense,RegionID,Switch,VehicleAge,PastAccident,AnnualPremium,SalesChannelID,DaysSinceCreated\n\
         1,Male,44,1,28,0,1-2 Year,Yes,\"£2,305.40\",26,100\n\
         2,Female,23,1,8,1,< 1 Year,No,£131.50,152,20\n\
         3,,,,,,,,,,\n",
    );
    let predict = ctx.run([
        "predict",
        "--model",
        "models/model.pbm",
        "--input",
        "few.csv",
        "--keep",
        "id",
    ]);
    insta::assert_snapshot!("predict_csv", shown(&predict));
    write(
        &ctx,
        "few.json",
        r#"[{"Gender": "Male", "Age": 44, "HasDrivingLicense": 1, "RegionID": 28,
             "Switch": 0, "PastAccident": "Yes", "AnnualPremium": "£2,305.40"},
            {"Gender": "Female", "Age": "23", "HasDrivingLicense": "1", "RegionID": 8.0,
             "Switch": 1, "PastAccident": "No", "AnnualPremium": 131.5}]"#,
    );
    let predict_json = ctx.run([
        "predict",
        "--model",
        "models/model.pbm",
        "--input",
        "few.json",
    ]);
    insta::assert_snapshot!("predict_json", shown(&predict_json));
}

#[test]
fn bad_input() {
    let ctx = TestContext::new();
    let settings = insta_settings(&ctx);
    let _guard = settings.bind_to_scope();
    write(&ctx, "empty.json", "");
    write(&ctx, "not-a-model.pbm", "hello");
    write(&ctx, "bad.yml", "model: [1, 2\n");
    let cases: [(&str, &[&str]); 8] = [
        ("train_without_data", &["train"]),
        ("train_missing_config", &["train", "--config", "nope.yml"]),
        ("train_invalid_config", &["train", "--config", "bad.yml"]),
        (
            "predict_not_a_model",
            &[
                "predict",
                "--model",
                "not-a-model.pbm",
                "--input",
                "empty.json",
            ],
        ),
        (
            "evaluate_missing_model",
            &["evaluate", "--model", "nope.pbm", "--data", "x.csv"],
        ),
        (
            "synth_bad_fraction",
            &["data", "synth", "--test-fraction", "1.5"],
        ),
        ("status_without_project", &["status", "--env", "nonprod"]),
        (
            "deploy_missing_config",
            &[
                "deploy",
                "v1.0.0",
                "--env",
                "nonprod",
                "--config",
                "nope.yaml",
            ],
        ),
    ];
    for (name, args) in cases {
        insta::assert_snapshot!(name, shown(&ctx.run(args)));
    }
    let model = common::models().a.display().to_string();
    let run = ctx.run(["predict", "--model", &model, "--input", "empty.json"]);
    insta::assert_snapshot!("predict_empty_json", shown(&run));
}

#[test]
fn quickstart_without_serving() {
    let ctx = TestContext::new();
    let mut settings = insta_settings(&ctx);
    // Training numbers are snapshotted by the training journey; here the steps matter.
    settings.add_filter(
        r"test ROC AUC \d\.\d+, accuracy \d\.\d+",
        "test ROC AUC [AUC], accuracy [ACC]",
    );
    settings.add_filter(r#"\{"Age".*\}'"#, "[SAMPLE]'");
    // The server's own lines interleave with quickstart's as the scheduler pleases.
    settings.add_filter(r"(?m)^predict-buy serve: .*\n", "");
    settings.add_filter(r"\(\d+ bytes\)", "([N] bytes)");
    let _guard = settings.bind_to_scope();
    let port = free_port().to_string();
    let text = ctx.run([
        "quickstart",
        "--rows",
        "3000",
        "--no-serve",
        "--port",
        &port,
    ]);
    insta::assert_snapshot!("quickstart_no_serve", shown(&text));
    let json = ctx.run(["quickstart", "--no-serve", "--json"]);
    insta::assert_snapshot!("quickstart_no_serve_json", shown(&json));
}
