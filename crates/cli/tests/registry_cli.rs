//! `predict-buy model …` and `predict-buy release …` against a file:// registry, run
//! through the built binary.

mod common;

use std::ffi::OsStr;

use common::{TestContext, models, sha256_of};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn push_prints_the_digest_and_is_idempotent() {
    let ctx = TestContext::new();
    let m = models();
    let first = ctx.run(["model", "push", s(&m.a)]).ok();
    let digest = first.stdout.trim();
    assert_eq!(digest, sha256_of(&m.a));
    assert!(first.stderr.contains("pushed"), "{first}");

    let second = ctx.run(["model", "push", s(&m.a)]).ok();
    assert_eq!(second.stdout.trim(), digest);
    assert!(second.stderr.contains("already stored"), "{second}");

    let listed = ctx.run(["model", "list", "--json"]).ok().json();
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["digest"], digest);
    assert_eq!(
        listed[0]["size"].as_u64(),
        Some(std::fs::metadata(&m.a).unwrap().len())
    );
}

#[test]
fn push_writes_a_pointer_file_that_pull_understands() {
    let ctx = TestContext::new();
    let local = ctx.path().join("model.pbm");
    std::fs::copy(&models().a, &local).unwrap();
    let digest = ctx
        .run(["model", "push", "model.pbm", "--pointer"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let pointer = std::fs::read_to_string(ctx.path().join("model.pbm.ref.yaml")).unwrap();
    assert!(pointer.contains(&digest), "{pointer}");
    assert!(pointer.contains("model.pbm"), "{pointer}");

    // The pointer names the artifact, so a fresh checkout gets it back from it, from
    // any folder.
    std::fs::remove_file(&local).unwrap();
    ctx.run(["model", "pull", "model.pbm.ref.yaml"]).ok();
    assert_eq!(sha256_of(&local), digest);
    std::fs::remove_file(&local).unwrap();
    let sub = ctx.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let registry = ctx.registry_dir();
    ctx.run_in(
        &sub,
        [
            "model",
            "pull",
            "../model.pbm.ref.yaml",
            "--registry",
            s(&registry),
        ],
    )
    .ok();
    assert_eq!(sha256_of(&local), digest);
}

#[test]
fn push_of_a_file_that_is_not_an_artifact_is_bad_input() {
    let ctx = TestContext::new();
    std::fs::write(ctx.path().join("notes.txt"), "not a model").unwrap();
    let run = ctx.run(["model", "push", "notes.txt"]).code(2);
    assert!(run.stderr.contains("notes.txt"), "{run}");
    assert!(
        run.stderr.contains("not a loadable model artifact"),
        "{run}"
    );

    let bytes = std::fs::read(&models().a).unwrap();
    std::fs::write(ctx.path().join("half.pbm"), &bytes[..bytes.len() / 2]).unwrap();
    let run = ctx.run(["model", "push", "half.pbm"]).code(2);
    assert!(
        run.stderr.contains("half.pbm") && run.stderr.contains("truncated"),
        "{run}"
    );

    let run = ctx.run(["model", "push", "missing.pbm"]).code(2);
    assert!(run.stderr.contains("missing.pbm"), "{run}");

    // Nothing was stored: the registry was not even created.
    assert!(!ctx.registry_dir().exists());
}

#[test]
fn pull_round_trips_byte_for_byte() {
    let ctx = TestContext::new();
    let digest = ctx.push(&models().b);
    ctx.run(["model", "pull", &digest, "--out", "out/full.pbm"])
        .ok();
    assert_eq!(
        std::fs::read(ctx.path().join("out/full.pbm")).unwrap(),
        std::fs::read(&models().b).unwrap()
    );

    // A unique prefix of the hex digits is enough.
    let prefix = &digest["sha256:".len().."sha256:".len() + 10];
    let run = ctx
        .run(["model", "pull", prefix, "--out", "prefix.pbm"])
        .ok();
    assert_eq!(run.stdout.trim(), "prefix.pbm");
    assert_eq!(sha256_of(&ctx.path().join("prefix.pbm")), digest);
}

#[test]
fn show_reports_registry_facts_and_model_metadata() {
    let ctx = TestContext::new();
    let digest = ctx.push(&models().a);
    let shown = ctx.run(["model", "show", &digest, "--json"]).ok().json();
    assert_eq!(shown["digest"], digest.as_str());
    assert_eq!(shown["model"]["name"], "GradientBoostingClassifier");
    assert_eq!(shown["model"]["n_trees"], 5);
    assert!(
        shown["model"]["trained_at"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    let threshold = shown["model"]["threshold"]["value"].as_f64().unwrap();
    assert!(threshold > 0.0 && threshold < 1.0, "{shown}");
    let auc = shown["model"]["metrics"]["roc_auc"].as_f64().unwrap();
    assert!(
        auc > 0.6,
        "a 5-tree model on synthetic data should beat chance: {auc}"
    );

    let text = ctx.run(["model", "show", &digest]).ok();
    assert!(
        text.stdout.contains("GradientBoostingClassifier (5 trees)"),
        "{text}"
    );
    assert!(text.stdout.contains("ROC AUC"), "{text}");
}

#[test]
fn release_create_list_show() {
    let ctx = TestContext::new();
    let m = models();
    let created = ctx
        .run([
            "release",
            "create",
            "v1.0.0",
            "--model",
            s(&m.a),
            "--image",
            "ghcr.io/acme/predict-buy:1.0.0",
            "--notes",
            "first",
            "--json",
        ])
        .ok();
    assert!(
        created.stderr.contains("created release v1.0.0"),
        "{created}"
    );
    let record = created.json();
    let digest = sha256_of(&m.a);
    assert_eq!(record["model_digest"], digest.as_str());

    let shown = ctx.run(["release", "show", "v1.0.0", "--json"]).ok().json();
    assert_eq!(shown, record);
    assert_eq!(shown["tag"], "v1.0.0");
    assert_eq!(shown["image"], "ghcr.io/acme/predict-buy:1.0.0");
    assert_eq!(shown["notes"], "first");
    assert_eq!(shown["created_by"], "tester");
    assert_eq!(
        shown["git_commit"],
        serde_json::Value::Null,
        "not in a git repo"
    );
    assert!(shown["metrics"]["accuracy"].as_f64().is_some(), "{shown}");

    // Golden predictions are the model's own answers: each class follows from its
    // probability and the artifact's threshold.
    let model = ctx.run(["model", "show", &digest, "--json"]).ok().json();
    let threshold = model["model"]["threshold"]["value"].as_f64().unwrap();
    let golden = shown["golden"].as_array().unwrap();
    assert!(!golden.is_empty());
    for g in golden {
        let p = g["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert_eq!(
            g["predicted_class"].as_u64(),
            Some(u64::from(p >= threshold)),
            "{g}"
        );
        assert!(
            g["input"]["Age"].is_number() || g["input"]["Age"].is_null(),
            "{g}"
        );
    }

    // A release can also name an artifact already stored, by digest prefix.
    ctx.run(["release", "create", "v1.1.0", "--model", &digest[7..19]])
        .ok();
    let v110 = ctx.run(["release", "show", "v1.1.0", "--json"]).ok().json();
    assert_eq!(v110["model_digest"], digest.as_str());
    assert_eq!(v110["golden"], shown["golden"]);
    assert_eq!(v110["image"], serde_json::Value::Null);

    let list = ctx.run(["release", "list", "--json"]).ok().json();
    let tags: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["v1.0.0", "v1.1.0"]);

    let text = ctx.run(["release", "list"]).ok().stdout;
    let short = &digest[7..19];
    assert!(text.contains("v1.0.0") && text.contains(short), "{text}");
    assert!(text.contains("ghcr.io/acme/predict-buy:1.0.0"), "{text}");

    // `model list` knows which releases use each artifact.
    let artifacts = ctx.run(["model", "list", "--json"]).ok().json();
    assert_eq!(
        artifacts[0]["releases"],
        serde_json::json!(["v1.0.0", "v1.1.0"])
    );
}

#[test]
fn bad_tags_are_refused_with_the_reason() {
    let ctx = TestContext::new();
    let model = models().a.clone();
    for (tag, reason) in [
        ("1.2.3", "missing leading `v`: write `v1.2.3`"),
        ("v1.2", "needs three numbers MAJOR.MINOR.PATCH"),
        ("v1.2.3-rc.1", "pre-release `-rc.1` is not allowed"),
    ] {
        let run = ctx
            .run([
                OsStr::new("release"),
                OsStr::new("create"),
                OsStr::new(tag),
                OsStr::new("--model"),
                model.as_os_str(),
            ])
            .code(2);
        assert!(
            run.stderr.contains(&format!("invalid release tag `{tag}`")),
            "{run}"
        );
        assert!(run.stderr.contains(reason), "{tag}: {run}");
    }
    ctx.run(["release", "show", "latest"]).code(2);
    // The tag is checked before anything is written.
    assert!(!ctx.registry_dir().exists());
}

#[test]
fn releases_are_immutable() {
    let ctx = TestContext::new();
    let m = models();
    let create = |model: &std::path::Path, image: &str| {
        ctx.run([
            OsStr::new("release"),
            OsStr::new("create"),
            OsStr::new("v2.0.0"),
            OsStr::new("--model"),
            model.as_os_str(),
            OsStr::new("--image"),
            OsStr::new(image),
        ])
    };
    create(&m.a, "img:1").ok();
    let again = create(&m.a, "img:1").ok();
    assert!(again.stderr.contains("unchanged"), "{again}");

    let other_model = create(&m.b, "img:1").code(2);
    assert!(
        other_model
            .stderr
            .contains("already exists with a different model_digest"),
        "{other_model}"
    );
    assert!(
        other_model.stderr.contains(&sha256_of(&m.a)),
        "stored digest shown: {other_model}"
    );
    assert!(
        other_model.stderr.contains("hint:") && other_model.stderr.contains("v2.0.1"),
        "{other_model}"
    );

    let other_image = create(&m.a, "img:2").code(2);
    assert!(
        other_image.stderr.contains("different image"),
        "{other_image}"
    );
    assert!(
        other_image.stderr.contains("stored img:1, given img:2"),
        "{other_image}"
    );

    let shown = ctx.run(["release", "show", "v2.0.0", "--json"]).ok().json();
    assert_eq!(shown["model_digest"], sha256_of(&m.a).as_str());
    assert_eq!(shown["image"], "img:1");

    // The refusal came before the push: model b was never stored.
    assert!(!ctx.object_path(&sha256_of(&m.b)).exists());
    assert_eq!(stored_objects(&ctx), [sha256_of(&m.a)]);
}

/// The digests of every object stored in the default registry, read from disk.
fn stored_objects(ctx: &TestContext) -> Vec<String> {
    let dir = ctx.registry_dir().join("registry-v1/objects/sha256");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
}

#[test]
fn read_only_commands_on_a_missing_registry_create_nothing() {
    let ctx = TestContext::new();
    let digest = sha256_of(&models().a);
    let registry = ctx.registry_dir();
    for args in [
        vec!["model", "list"],
        vec!["model", "list", "--json"],
        vec!["model", "verify"],
        vec!["model", "show", digest.as_str()],
        vec!["model", "pull", digest.as_str()],
        vec!["release", "list"],
        vec!["release", "show", "v1.0.0"],
        vec!["registry", "gc"],
    ] {
        let run = ctx.run(&args).code(2);
        assert!(
            run.stderr.contains(&format!(
                "error: no registry at file://.predict-buy/registry: there is no folder `{}`",
                registry.join("registry-v1").display()
            )),
            "{args:?}: {run}"
        );
        assert!(
            run.stderr.contains(
                "hint: push a model with `predict-buy model push` or run `predict-buy quickstart`"
            ),
            "{args:?}: {run}"
        );
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(
            !ctx.path().join(".predict-buy").exists(),
            "{args:?} created it"
        );
    }
    // An explicit URL is named as given.
    let run = ctx
        .run(["release", "list", "--registry", "file:///nonexistent/reg"])
        .code(2);
    assert!(
        run.stderr
            .contains("no registry at file:///nonexistent/reg"),
        "{run}"
    );
    assert!(!std::path::Path::new("/nonexistent").exists());
    // The first write creates it; then reads work.
    ctx.push(&models().a);
    let listed = ctx.run(["model", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["digest"], digest.as_str());
    assert_eq!(
        ctx.run(["release", "list", "--json"]).ok().json(),
        serde_json::json!([])
    );
}

#[test]
fn push_and_pull_report_in_json() {
    let ctx = TestContext::new();
    let m = models();
    let digest = sha256_of(&m.a);
    let size = std::fs::metadata(&m.a).unwrap().len();
    let first = ctx
        .run([
            OsStr::new("model"),
            OsStr::new("push"),
            m.a.as_os_str(),
            OsStr::new("--json"),
        ])
        .ok()
        .json();
    assert_eq!(first["digest"], digest.as_str());
    assert_eq!(first["size"], size);
    assert_eq!(first["uploaded"], true);
    assert_eq!(first["pointer"], serde_json::Value::Null);
    assert_eq!(first["path"], s(&m.a));
    assert_eq!(first["registry"], "file://.predict-buy/registry");
    let again = ctx
        .run([
            OsStr::new("model"),
            OsStr::new("push"),
            m.a.as_os_str(),
            OsStr::new("--json"),
            OsStr::new("--pointer"),
        ])
        .ok()
        .json();
    assert_eq!(again["uploaded"], false);
    let pointer = format!("{}.ref.yaml", s(&m.a));
    assert_eq!(again["pointer"], pointer.as_str());

    let pulled = ctx
        .run(["model", "pull", &digest, "--out", "out/m.pbm", "--json"])
        .ok()
        .json();
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(pulled["size"], size);
    assert_eq!(pulled["path"], "out/m.pbm");
    assert_eq!(sha256_of(&ctx.path().join("out/m.pbm")), digest);
}

/// Leaves a staging file in the default registry as a writer killed mid-write does,
/// last written `age` ago.
fn leave_staging_file(ctx: &TestContext, name: &str, len: usize, age: std::time::Duration) {
    let path = ctx
        .registry_dir()
        .join("registry-v1/objects/sha256")
        .join(name);
    let file = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut &file, &vec![7u8; len]).unwrap();
    file.set_times(std::fs::FileTimes::new().set_modified(std::time::SystemTime::now() - age))
        .unwrap();
}

#[test]
fn verify_lists_interrupted_writes_and_gc_removes_only_old_ones() {
    let ctx = TestContext::new();
    let digest = ctx.push(&models().a);
    let hour = std::time::Duration::from_secs(3600);
    let old = format!("{}#3", "ab".repeat(32));
    let fresh = format!("{}#4", "cd".repeat(32));
    leave_staging_file(
        &ctx,
        &old,
        1000,
        2 * hour + std::time::Duration::from_secs(300),
    );
    leave_staging_file(&ctx, &fresh, 500, std::time::Duration::ZERO);

    // A warning, not a failure: readers never see these.
    let verify = ctx.run(["model", "verify"]).ok();
    assert!(verify.stdout.contains("1 artifacts verified"), "{verify}");
    assert!(
        verify
            .stderr
            .contains("warning: 2 leftover(s) of interrupted writes"),
        "{verify}"
    );
    let old_key = format!("registry-v1/objects/sha256/{}", "ab".repeat(32));
    let fresh_key = format!("registry-v1/objects/sha256/{}", "cd".repeat(32));
    assert!(
        verify
            .stderr
            .contains(&format!("{old_key}  (1000 bytes, 2h 5m old;")),
        "{verify}"
    );
    assert!(
        verify.stderr.contains("predict-buy registry gc"),
        "{verify}"
    );
    let json = ctx.run(["model", "verify", "--json"]).ok().json();
    let interrupted = json["interrupted"].as_array().unwrap();
    assert_eq!(interrupted.len(), 2, "{json}");
    assert_eq!(interrupted[0]["target"], old_key.as_str());
    assert_eq!(interrupted[0]["size"], 1000);
    let age = interrupted[0]["age_seconds"].as_u64().unwrap();
    assert!((7500..7600).contains(&age), "{age}");

    let staged = |name: &str| {
        ctx.registry_dir()
            .join("registry-v1/objects/sha256")
            .join(name)
            .exists()
    };
    let dry = ctx
        .run(["registry", "gc", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["min_age_seconds"], 3600);
    assert_eq!(dry["removed"][0]["target"], old_key.as_str());
    assert_eq!(dry["kept"][0]["target"], fresh_key.as_str());
    assert!(staged(&old) && staged(&fresh), "a dry run removes nothing");

    let gc = ctx.run(["registry", "gc"]).ok();
    assert!(gc.stdout.contains(&format!("removed  {old_key}")), "{gc}");
    assert!(gc.stdout.contains(&format!("kept  {fresh_key}")), "{gc}");
    assert!(
        gc.stderr
            .contains("removed 1 leftover(s) of interrupted writes (1000 bytes)"),
        "{gc}"
    );
    assert!(!staged(&old) && staged(&fresh));

    let all = ctx
        .run(["registry", "gc", "--min-age", "0s", "--json"])
        .ok()
        .json();
    assert_eq!(all["removed"][0]["target"], fresh_key.as_str());
    assert_eq!(all["bytes_freed"], 500);
    assert!(!staged(&fresh));
    // The artifact itself is untouched, and verify is clean again.
    assert_eq!(stored_objects(&ctx), [digest]);
    let clean = ctx.run(["model", "verify"]).ok();
    assert!(!clean.stderr.contains("warning"), "{clean}");

    let bad = ctx.run(["registry", "gc", "--min-age", "1w"]).code(2);
    assert!(bad.stderr.contains("unknown unit `w`"), "{bad}");
}

#[test]
fn unknown_tags_and_digests_are_bad_input_with_a_hint() {
    let ctx = TestContext::new();
    ctx.push(&models().b);
    let run = ctx.run(["release", "show", "v9.9.9"]).code(2);
    assert!(run.stderr.contains("unknown release `v9.9.9`"), "{run}");
    assert!(
        run.stderr.contains("hint: run `predict-buy release list`"),
        "{run}"
    );

    let missing = sha256_of(&models().a);
    for args in [
        vec!["model", "pull", missing.as_str()],
        vec!["model", "show", missing.as_str()],
        vec!["release", "create", "v1.0.0", "--model", missing.as_str()],
    ] {
        let run = ctx.run(&args).code(2);
        assert!(
            run.stderr
                .contains(&format!("unknown artifact `{missing}`")),
            "{args:?}: {run}"
        );
        assert!(
            run.stderr.contains("predict-buy model list"),
            "{args:?}: {run}"
        );
    }
    let run = ctx
        .run(["release", "create", "v1.0.0", "--model", "no-such.pbm"])
        .code(2);
    assert!(
        run.stderr.contains("no-such.pbm") && run.stderr.contains("no such file"),
        "{run}"
    );
}

#[test]
fn verify_names_each_corrupt_object() {
    let ctx = TestContext::new();
    let a = ctx.push(&models().a);
    let b = ctx.push(&models().b);
    let fine = ctx.run(["model", "verify"]).ok();
    assert!(fine.stdout.contains("2 artifacts verified"), "{fine}");

    let object = ctx.object_path(&a);
    let mut perms = std::fs::metadata(&object).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&object, perms).unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();

    let run = ctx.run(["model", "verify"]).code(1);
    let hex_a = &a["sha256:".len()..];
    let hex_b = &b["sha256:".len()..];
    assert!(
        run.stderr
            .contains(&format!("registry-v1/objects/sha256/{hex_a}")),
        "{run}"
    );
    assert!(run.stderr.contains("1 of 2 artifacts are corrupt"), "{run}");
    assert!(
        !run.stderr.contains(hex_b),
        "the intact object is not named: {run}"
    );

    let json = ctx.run(["model", "verify", "--json"]).code(1).json();
    assert_eq!(json["checked"], 2);
    assert_eq!(json["corrupt"].as_array().unwrap().len(), 1);

    // Reading the damaged object fails too; pushing the original repairs it.
    let pull = ctx.run(["model", "pull", &a, "--out", "x.pbm"]).code(1);
    assert!(pull.stderr.contains("corrupt object"), "{pull}");
    assert!(!ctx.path().join("x.pbm").exists());
    ctx.push(&models().a);
    ctx.run(["model", "verify"]).ok();
}

#[test]
fn registry_comes_from_flag_then_env_then_project_file() {
    let mut ctx = TestContext::new();
    let sub = ctx.path().join("deep/er");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        "registry: file://team-registry\nenvironments:\n  nonprod: {target: local}\n",
    )
    .unwrap();
    let model = models().a.clone();
    let digest = sha256_of(&model);
    let hex = &digest["sha256:".len()..];
    let object = |root: &std::path::Path| root.join("registry-v1/objects/sha256").join(hex);

    // predict-buy.yaml above the current folder; its relative path is relative to it.
    ctx.run_in(
        &sub,
        [OsStr::new("model"), OsStr::new("push"), model.as_os_str()],
    )
    .ok();
    assert!(object(&ctx.path().join("team-registry")).exists());
    assert!(!sub.join(".predict-buy").exists());

    // The flag beats everything; the environment beats the file.
    let flagged = ctx.path().join("flagged");
    ctx.run([
        OsStr::new("model"),
        OsStr::new("push"),
        model.as_os_str(),
        OsStr::new("--registry"),
        flagged.as_os_str(),
    ])
    .ok();
    assert!(object(&flagged).exists());
    let from_env = ctx.path().join("from-env");
    ctx.env(
        "PREDICT_BUY_REGISTRY",
        &format!("file://{}", from_env.display()),
    );
    ctx.run_in(
        &sub,
        [OsStr::new("model"), OsStr::new("push"), model.as_os_str()],
    )
    .ok();
    assert!(object(&from_env).exists());

    let bad = ctx
        .run(["model", "list", "--registry", "gs://bucket"])
        .code(2);
    assert!(bad.stderr.contains("unsupported scheme `gs://`"), "{bad}");
}

#[test]
fn unreachable_registry_fails_with_exit_code_1() {
    let mut ctx = TestContext::new();
    // Nothing listens on port 9 (discard) of the loopback interface here.
    ctx.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    ctx.env("AWS_ACCESS_KEY_ID", "test");
    ctx.env("AWS_SECRET_ACCESS_KEY", "test");
    ctx.env("AWS_REGION", "us-east-1");
    let run = ctx
        .run(["release", "list", "--registry", "s3://unreachable-bucket/x"])
        .code(1);
    assert!(run.stderr.contains("s3://unreachable-bucket/x"), "{run}");
    assert!(run.stderr.contains("127.0.0.1:9"), "{run}");
}

/// object_store panics on an endpoint that is not an absolute URL; we refuse it first.
#[test]
fn an_endpoint_that_is_not_a_url_is_bad_input_not_a_panic() {
    for endpoint in ["", "localhost:9000", "ftp://127.0.0.1:9"] {
        let mut ctx = TestContext::new();
        ctx.env("AWS_ENDPOINT_URL", endpoint);
        ctx.env("AWS_ACCESS_KEY_ID", "test");
        ctx.env("AWS_SECRET_ACCESS_KEY", "test");
        ctx.env("AWS_REGION", "us-east-1");
        let run = ctx
            .run(["release", "list", "--registry", "s3://bucket/x"])
            .code(2);
        assert!(run.stderr.contains("AWS_ENDPOINT_URL"), "{run}");
        assert!(
            run.stderr.contains(&format!("`{endpoint}`")),
            "{endpoint}: {run}"
        );
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
}

#[test]
fn release_records_the_git_commit_inside_a_repository() {
    let ctx = TestContext::new();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(ctx.path())
            .env("GIT_CEILING_DIRECTORIES", ctx.path().parent().unwrap())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git(&["init", "-q"]);
    std::fs::write(ctx.path().join("README"), "x").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "init"]);
    let head = git(&["rev-parse", "HEAD"]);
    ctx.run([
        OsStr::new("release"),
        OsStr::new("create"),
        OsStr::new("v0.1.0"),
        OsStr::new("--model"),
        models().a.as_os_str(),
    ])
    .ok();
    let shown = ctx.run(["release", "show", "v0.1.0", "--json"]).ok().json();
    assert_eq!(shown["git_commit"], head.as_str());
}

#[test]
fn release_list_snapshot() {
    let ctx = TestContext::new();
    let m = models();
    for (tag, model, image) in [
        ("v0.10.0", &m.b, Some("ghcr.io/acme/predict-buy:0.10.0")),
        ("v0.9.0", &m.a, None),
        ("v0.9.1", &m.a, Some("img")),
    ] {
        let mut args = vec![
            OsStr::new("release"),
            OsStr::new("create"),
            OsStr::new(tag),
            OsStr::new("--model"),
            model.as_os_str(),
        ];
        if let Some(image) = image {
            args.extend([OsStr::new("--image"), OsStr::new(image)]);
        }
        ctx.run(args).ok();
    }
    let out = ctx.run(["release", "list"]).ok().stdout;
    insta::with_settings!({filters => vec![
        (r"\b[0-9a-f]{12}\b", "[DIGEST]    "),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]              "),
    ]}, {
        insta::assert_snapshot!(out, @r"
        TAG      MODEL         CREATED               IMAGE
        v0.9.0   [DIGEST]      [TIME]                -
        v0.9.1   [DIGEST]      [TIME]                img
        v0.10.0  [DIGEST]      [TIME]                ghcr.io/acme/predict-buy:0.10.0
        ");
    });
}
