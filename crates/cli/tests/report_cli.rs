//! `predict-buy report` through the binary: a model file, releases compared from the
//! registry, `--evaluate`, and the bad inputs refused with exit code 2 and a hint.

mod common;

use std::ffi::OsStr;

use common::{TestContext, models};

fn page(ctx: &TestContext, name: &str) -> String {
    std::fs::read_to_string(ctx.path().join(name))
        .unwrap_or_else(|e| panic!("{name} was not written: {e}"))
}

#[test]
fn a_model_file_gets_a_page_under_the_default_name() {
    let ctx = TestContext::new();
    let run = ctx
        .run([
            OsStr::new("report"),
            OsStr::new("--model"),
            models().a.as_os_str(),
        ])
        .ok();
    assert!(run.stdout.contains("report-a.html"), "{run}");
    let html = page(&ctx, "report-a.html");
    assert!(html.contains("Model report: "), "{}", &html[..200]);
    assert!(html.matches("<svg").count() >= 6);
    assert!(!html.contains("<script"));
    // Trained outside a git work tree: the page says the commit is unknown.
    assert!(html.contains("— (not recorded)"));
    // Nothing but the page is left in the folder (the write is atomic).
    let mut names: Vec<String> = std::fs::read_dir(ctx.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["report-a.html"]);
}

#[test]
fn two_releases_are_compared_and_another_data_set_is_drawn() {
    let ctx = TestContext::new();
    for (tag, model) in [("v1.0.0", &models().a), ("v1.1.0", &models().b)] {
        ctx.run([
            OsStr::new("release"),
            OsStr::new("create"),
            OsStr::new(tag),
            OsStr::new("--model"),
            model.as_os_str(),
        ])
        .ok();
    }
    ctx.run(["report", "v1.0.0", "v1.1.0"]).ok();
    let html = page(&ctx, "report-v1.0.0-vs-v1.1.0.html");
    assert!(html.contains("Model comparison: v1.0.0 vs v1.1.0"));
    assert!(html.contains("plot-threshold-1"));

    ctx.run([
        "data", "synth", "--rows", "1500", "--seed", "9", "--out", "other",
    ])
    .ok();
    let run = ctx
        .run([
            "report",
            "v1.0.0",
            "--evaluate",
            "other/test.csv",
            "--out",
            "out/v1.html",
        ])
        .ok();
    assert!(run.stdout.contains("other/test.csv (--evaluate)"), "{run}");
    let html = page(&ctx, "out/v1.html");
    assert!(html.contains("the rows of other/test.csv (--evaluate)"));
}

#[test]
fn an_evaluation_file_with_other_columns_is_refused_by_name() {
    let ctx = TestContext::new();
    std::fs::write(
        ctx.path().join("other.csv"),
        "Gender,Age,Premium,Result\nMale,30,100,1\nFemale,40,200,0\n",
    )
    .unwrap();
    let run = ctx
        .run([
            OsStr::new("report"),
            OsStr::new("--model"),
            models().a.as_os_str(),
            OsStr::new("--evaluate"),
            OsStr::new("other.csv"),
        ])
        .code(2);
    assert!(run.stderr.contains("other.csv"), "{run}");
    // The preset the model was trained with uses RegionID, which the file lacks.
    assert!(run.stderr.contains("column `RegionID`"), "{run}");
    assert!(run.stderr.contains("hint:"), "{run}");
    assert!(!ctx.path().join("report-a.html").exists());
}

#[test]
fn a_model_without_test_metrics_asks_for_evaluate() {
    use sha2::Digest as _;
    let ctx = TestContext::new();
    // The artifact as a version before reports wrote it: no stored evaluation.
    let bytes = std::fs::read(&models().a).unwrap();
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    // Format 3: the payload's JSON, then its trees in binary, kept as they are.
    let stored = &bytes[20..20 + len];
    let mut stream = serde_json::Deserializer::from_slice(stored).into_iter::<serde_json::Value>();
    let mut payload = stream.next().unwrap().unwrap();
    let trees = &stored[stream.byte_offset()..];
    payload["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("test_evaluation");
    let mut body = serde_json::to_vec(&payload).unwrap();
    body.extend_from_slice(trees);
    let mut old = bytes[..12].to_vec();
    old.extend_from_slice(&(body.len() as u64).to_le_bytes());
    old.extend_from_slice(&body);
    let sum = sha2::Sha256::digest(&old);
    old.extend_from_slice(&sum);
    std::fs::write(ctx.path().join("old.pbm"), &old).unwrap();

    let run = ctx.run(["report", "--model", "old.pbm"]).code(2);
    assert!(run.stderr.contains("give --evaluate DATA"), "{run}");
    assert!(run.stderr.contains("old.pbm"), "{run}");

    ctx.run([
        "data", "synth", "--rows", "1500", "--seed", "4", "--out", "data",
    ])
    .ok();
    ctx.run([
        "report",
        "--model",
        "old.pbm",
        "--evaluate",
        "data/test.csv",
    ])
    .ok();
    assert!(page(&ctx, "report-old.html").contains("plot-roc"));
}

#[test]
fn no_model_and_no_tag_is_a_usage_error() {
    let ctx = TestContext::new();
    let run = ctx.run(["report"]).code(2);
    assert!(run.stderr.contains("--model PATH"), "{run}");
}
