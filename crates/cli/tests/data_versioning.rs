//! Data versioning through the built binary: `data push|pull`, training from pointer
//! files and digests, releases that name their data, `registry gc` sparing it, and
//! `release reproduce` (on 1 and 2 threads, against a tampered data object, and with a
//! config changed by hand).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Run, TestContext, sha256_of};
use predict_buy_model::Model;

const ALLOW: &str = "PREDICT_BUY_ALLOW_UNVERSIONED_DATA";

/// A context where releases need versioned data (the shared helper allows it, for
/// the tests that predate data versioning), with synthetic data in `data/`.
fn context() -> TestContext {
    let mut ctx = TestContext::new();
    ctx.env(ALLOW, "false");
    ctx.run([
        "data", "synth", "--rows", "3000", "--seed", "11", "--out", "data",
    ])
    .ok();
    ctx
}

/// A small gradient-boosting config reading `train` and `test` as given.
fn config(ctx: &TestContext, name: &str, train: &str, test: &str, trees: u32) {
    std::fs::write(
        ctx.path().join(name),
        format!(
            "data:\n  train_path: {train}\n  test_path: {test}\n\
             train:\n  test_size: 0.2\n  random_state: 1\n\
             model:\n  name: GradientBoostingClassifier\n  \
             params: {{n_estimators: {trees}, max_depth: 3, random_state: 1}}\n  \
             store_path: models\n"
        ),
    )
    .unwrap();
}

fn artifact(path: &Path) -> Model {
    Model::from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

fn run_with(ctx: &TestContext, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd: Command = ctx.command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run predict-buy");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Pushes the synthetic data, trains from its pointer files and releases v1.0.0.
fn release_from_pointers(ctx: &TestContext) -> String {
    ctx.run(["data", "push", "data/train.csv", "data/test.csv"])
        .ok();
    config(
        ctx,
        "versioned.yml",
        "data/train.csv.ref.yaml",
        "data/test.csv.ref.yaml",
        5,
    );
    ctx.run([
        "train",
        "--config",
        "versioned.yml",
        "--out",
        "models/v.pbm",
    ])
    .ok();
    ctx.run(["release", "create", "v1.0.0", "--model", "models/v.pbm"])
        .ok();
    sha256_of(&ctx.path().join("models/v.pbm"))
}

#[test]
fn push_writes_pointers_and_pull_restores_without_clobbering() {
    let ctx = context();
    let train = ctx.path().join("data/train.csv");
    let test = ctx.path().join("data/test.csv");
    let (train_digest, test_digest) = (sha256_of(&train), sha256_of(&test));

    let pushed = ctx
        .run(["data", "push", "data/train.csv", "data/test.csv", "--json"])
        .ok()
        .json();
    assert_eq!(pushed[0]["digest"], train_digest.as_str());
    assert_eq!(pushed[1]["digest"], test_digest.as_str());
    assert_eq!(pushed[0]["uploaded"], true);
    let size = std::fs::metadata(&train).unwrap().len();
    assert_eq!(pushed[0]["size"].as_u64(), Some(size));
    assert!(
        pushed[0]["stored_size"].as_u64().unwrap() * 2 < size,
        "not compressed: {pushed}"
    );
    let pointer: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(ctx.path().join("data/train.csv.ref.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(pointer["kind"].as_str(), Some("data"));
    assert_eq!(pointer["digest"].as_str(), Some(train_digest.as_str()));
    assert_eq!(pointer["size"].as_u64(), Some(size));
    assert_eq!(pointer["name"].as_str(), Some("train.csv"));

    let again = ctx.run(["data", "push", "data/train.csv"]).ok();
    assert!(again.stderr.contains("already stored"), "{again}");

    // Restored from its pointer after the file is gone.
    std::fs::remove_file(&train).unwrap();
    let pulled = ctx.run(["data", "pull", "data/train.csv.ref.yaml"]).ok();
    assert!(pulled.stdout.contains("restored"), "{pulled}");
    assert_eq!(sha256_of(&train), train_digest);

    // An edited file is never replaced silently: the error names it.
    std::fs::write(&test, "id,Result\n1,0\n").unwrap();
    let refused = ctx.run(["data", "pull"]).code(2);
    assert!(refused.stderr.contains("data/test.csv"), "{refused}");
    assert!(refused.stderr.contains("--force"), "{refused}");
    assert_eq!(std::fs::read_to_string(&test).unwrap(), "id,Result\n1,0\n");
    let forced = ctx.run(["data", "pull", "--force"]).ok();
    assert!(forced.stdout.contains("up to date"), "{forced}");
    assert_eq!(sha256_of(&test), test_digest);
}

#[test]
fn train_reads_pointers_and_digests_and_records_each_file() {
    let ctx = context();
    let test_digest = sha256_of(&ctx.path().join("data/test.csv"));
    let train_digest = sha256_of(&ctx.path().join("data/train.csv"));
    ctx.run(["data", "push", "data/train.csv", "data/test.csv"])
        .ok();
    // The data files go away: only the pointer and the digest remain.
    std::fs::remove_file(ctx.path().join("data/train.csv")).unwrap();
    std::fs::remove_file(ctx.path().join("data/test.csv")).unwrap();
    config(&ctx, "c.yml", "data/train.csv.ref.yaml", &test_digest, 4);
    let report = ctx
        .run([
            "train",
            "--config",
            "c.yml",
            "--out",
            "models/m.pbm",
            "--json",
        ])
        .ok()
        .json();
    let model = artifact(&ctx.path().join("models/m.pbm"));
    assert_eq!(report["digest"], model.digest());
    let files = &model.metadata().data_files;
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        (files[0].role.as_str(), files[0].digest.as_str()),
        ("train", train_digest.as_str())
    );
    assert_eq!(files[0].name, "train.csv");
    assert_eq!(
        (files[1].role.as_str(), files[1].digest.as_str()),
        ("test", test_digest.as_str())
    );
    assert_eq!(
        model.metadata().data_digest.as_deref(),
        Some(train_digest.as_str())
    );
    assert_eq!(
        model.metadata().config["data"]["train_path"],
        "data/train.csv.ref.yaml"
    );

    // A digest that was never pushed is bad input naming the key.
    let unknown = format!("sha256:{}", "0".repeat(64));
    config(&ctx, "bad.yml", &unknown, &test_digest, 4);
    let bad = ctx.run(["train", "--config", "bad.yml"]).code(2);
    assert!(bad.stderr.contains("data.train_path"), "{bad}");
    assert!(bad.stderr.contains(&unknown), "{bad}");
}

#[test]
fn releases_name_versioned_data_and_gc_spares_it() {
    let ctx = context();
    config(&ctx, "plain.yml", "data/train.csv", "data/test.csv", 4);
    ctx.run(["train", "--config", "plain.yml", "--out", "models/p.pbm"])
        .ok();

    let refused = ctx
        .run(["release", "create", "v0.1.0", "--model", "models/p.pbm"])
        .code(2);
    assert!(refused.stderr.contains("not in registry"), "{refused}");
    assert!(refused.stderr.contains("data push"), "{refused}");
    assert!(refused.stderr.contains("train.csv"), "{refused}");
    ctx.run(["release", "show", "v0.1.0"]).code(2);

    let allowed = ctx
        .run([
            "release",
            "create",
            "v0.1.0",
            "--model",
            "models/p.pbm",
            "--allow-unversioned-data",
        ])
        .ok();
    assert!(allowed.stderr.contains("created release"), "{allowed}");
    let shown = ctx.run(["release", "show", "v0.1.0"]).ok();
    assert!(shown.stdout.contains("NOT in the registry"), "{shown}");

    // The same bytes pushed afterwards are the same digests: the model now qualifies.
    ctx.run(["data", "push", "data/train.csv", "data/test.csv"])
        .ok();
    ctx.run(["release", "create", "v0.2.0", "--model", "models/p.pbm"])
        .ok();
    let record = ctx.run(["release", "show", "v0.2.0", "--json"]).ok().json();
    let training = &record["training"];
    assert_eq!(training["data_in_registry"], true);
    let train_digest = sha256_of(&ctx.path().join("data/train.csv"));
    let test_digest = sha256_of(&ctx.path().join("data/test.csv"));
    assert_eq!(training["data"][0]["digest"], train_digest.as_str());
    assert_eq!(training["data"][1]["digest"], test_digest.as_str());
    assert_eq!(training["config"]["model"]["params"]["n_estimators"], 4);
    assert!(training["tool_version"].is_string());
    let text = ctx.run(["release", "show", "v0.2.0"]).ok().stdout;
    assert!(text.contains(&train_digest), "{text}");
    assert!(text.contains(&test_digest), "{text}");

    // Loose data goes; data a release names stays.
    std::fs::write(ctx.path().join("loose.csv"), "id,Result\n1,1\n").unwrap();
    ctx.run(["data", "push", "loose.csv"]).ok();
    let loose = sha256_of(&ctx.path().join("loose.csv"));
    let object = |d: &str| {
        ctx.registry_dir().join(format!(
            "registry-v1/data/sha256/{}.zst",
            d.trim_start_matches("sha256:")
        ))
    };
    assert!(object(&loose).exists());
    let young = ctx.run(["registry", "gc"]).ok();
    assert!(young.stdout.contains("younger than"), "{young}");
    assert!(object(&loose).exists(), "young data was removed");
    let gc = ctx
        .run(["registry", "gc", "--data-min-age", "0s", "--json"])
        .ok()
        .json();
    assert_eq!(gc["data"]["removed"][0]["digest"], loose.as_str());
    assert_eq!(gc["data"]["removed"].as_array().map(Vec::len), Some(1));
    assert!(!object(&loose).exists());
    assert!(object(&train_digest).exists() && object(&test_digest).exists());
}

#[test]
fn reproduce_gives_the_same_digest_on_one_and_two_threads() {
    let ctx = context();
    let released = release_from_pointers(&ctx);
    let mut digests = Vec::new();
    for threads in ["1", "2"] {
        let out = format!("models/re-{threads}.pbm");
        let run = run_with(
            &ctx,
            &[("RAYON_NUM_THREADS", threads)],
            &["release", "reproduce", "v1.0.0", "--out", &out],
        )
        .ok();
        assert!(run.stdout.starts_with("reproduced v1.0.0"), "{run}");
        assert!(run.stdout.contains("bit for bit"), "{run}");
        digests.push(sha256_of(&ctx.path().join(&out)));
    }
    assert_eq!(digests, [released.clone(), released]);

    let json = ctx
        .run(["release", "reproduce", "v1.0.0", "--json"])
        .ok()
        .json();
    assert_eq!(json["reproduced"], true);
    assert_eq!(json["bit_for_bit"], true);
    assert_eq!(json["differences"].as_array().map(Vec::len), Some(0));
}

#[test]
fn reproduce_detects_a_tampered_data_object() {
    let ctx = context();
    release_from_pointers(&ctx);
    let train_digest = sha256_of(&ctx.path().join("data/train.csv"));
    let object = ctx.registry_dir().join(format!(
        "registry-v1/data/sha256/{}.zst",
        train_digest.trim_start_matches("sha256:")
    ));
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&object, &bytes).unwrap();

    let run = ctx.run(["release", "reproduce", "v1.0.0"]).code(1);
    assert!(run.stderr.contains("corrupt"), "{run}");
    assert!(
        run.stderr
            .contains(train_digest.trim_start_matches("sha256:")),
        "{run}"
    );
    assert!(!run.stdout.contains("reproduced"), "{run}");
}

#[test]
fn reproduce_names_a_config_changed_by_hand() {
    let ctx = context();
    release_from_pointers(&ctx);
    // The config in git, edited since the release: one more tree.
    config(
        &ctx,
        "edited.yml",
        "data/train.csv.ref.yaml",
        "data/test.csv.ref.yaml",
        6,
    );
    let run = ctx
        .run(["release", "reproduce", "v1.0.0", "--config", "edited.yml"])
        .code(1);
    assert!(run.stdout.starts_with("not reproduced v1.0.0"), "{run}");
    let lines: Vec<&str> = run.stdout.lines().skip(1).map(str::trim).collect();
    assert_eq!(
        lines.first().copied(),
        Some("config   model.params.n_estimators: release 5, now 6"),
        "{run}"
    );
    // Then what the change did: metrics first, then the trees.
    assert!(
        lines.get(1).is_some_and(|l| l.starts_with("metrics ")),
        "{run}"
    );
    assert!(
        lines.get(2).is_some_and(|l| l.starts_with("trees ")),
        "{run}"
    );
    assert!(run.stderr.contains("did not reproduce"), "{run}");

    let json = run_with(
        &ctx,
        &[],
        &[
            "release",
            "reproduce",
            "v1.0.0",
            "--config",
            "edited.yml",
            "--json",
        ],
    )
    .code(1)
    .json();
    assert_eq!(json["reproduced"], false);
    assert_eq!(json["differences"][0]["section"], "config");
    assert_eq!(
        json["differences"][0]["path"],
        "metadata.config.model.params.n_estimators"
    );
}
