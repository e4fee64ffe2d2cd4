//! Snapshots of what the registry commands (`model`, `release`, `registry gc`) and the
//! deploy commands (`deploy`, `rollback`, `promote`, `status`, `history`) print, in
//! text and `--json`, and of their errors: an unknown release, a missing registry, a
//! policy refusal, a held lease and an age past the cap. The deploy commands run against real `predict-buy
//! serve` processes on ephemeral ports. Filters (common::insta_settings_registry) hide
//! temp paths, digests, times, durations, ports and ages; everything else is compared
//! exactly.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Run, TestContext, insta_settings_registry, leave_staging_file, models};
use predict_buy_registry::{EnvName, Registry, RegistryUrl};

/// How long a server may take to start on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// Exit code and both streams, as one snapshot.
fn shown(run: &Run) -> String {
    run.to_string()
}

fn run_os(ctx: &TestContext, args: &[&OsStr]) -> Run {
    ctx.run(args)
}

#[test]
fn model_release_and_gc_output() {
    let ctx = TestContext::new();
    let settings = insta_settings_registry(&ctx);
    let _guard = settings.bind_to_scope();
    let m = models();

    // Reads on a registry that does not exist say so, and create nothing; so does a
    // release naming a digest, which can only be something already stored.
    let list = ctx.run(["model", "list"]).code(2);
    insta::assert_snapshot!("model_list_missing_registry", shown(&list));
    let create = ctx
        .run(["release", "create", "v0.1.0", "--model", "0123abcd"])
        .code(2);
    insta::assert_snapshot!("release_create_digest_missing_registry", shown(&create));
    assert!(
        !ctx.path().join(".predict-buy").exists(),
        "a read or a digest created the registry"
    );

    let push = run_os(&ctx, &["model".as_ref(), "push".as_ref(), m.a.as_os_str()]).ok();
    insta::assert_snapshot!("model_push", shown(&push));
    let digest_a = push.stdout.trim().to_string();
    let list = ctx.run(["model", "list"]).ok();
    insta::assert_snapshot!("model_list", shown(&list));
    let list_json = ctx.run(["model", "list", "--json"]).ok();
    insta::assert_snapshot!("model_list_json", shown(&list_json));
    assert_eq!(list_json.json().as_array().map(Vec::len), Some(1));

    // Pushed after the listing: list order follows digests, which differ per run.
    let push_json = run_os(
        &ctx,
        &[
            "model".as_ref(),
            "push".as_ref(),
            m.b.as_os_str(),
            "--json".as_ref(),
        ],
    )
    .ok();
    insta::assert_snapshot!("model_push_json", shown(&push_json));

    let show = ctx.run(["model", "show", &digest_a]).ok();
    insta::assert_snapshot!("model_show", shown(&show));
    let show_json = ctx.run(["model", "show", &digest_a, "--json"]).ok();
    insta::assert_snapshot!("model_show_json", shown(&show_json));

    let pull = ctx
        .run(["model", "pull", &digest_a, "--out", "out/a.pbm"])
        .ok();
    insta::assert_snapshot!("model_pull", shown(&pull));
    let pull_json = ctx
        .run(["model", "pull", &digest_a, "--out", "out/a2.pbm", "--json"])
        .ok();
    insta::assert_snapshot!("model_pull_json", shown(&pull_json));

    let create = run_os(
        &ctx,
        &[
            "release".as_ref(),
            "create".as_ref(),
            "v0.1.0".as_ref(),
            "--model".as_ref(),
            m.a.as_os_str(),
            "--notes".as_ref(),
            "first".as_ref(),
        ],
    )
    .ok();
    insta::assert_snapshot!("release_create", shown(&create));
    let create_json = ctx
        .run([
            "release",
            "create",
            "v0.2.0",
            "--model",
            &digest_a[7..19],
            "--image",
            "ghcr.io/acme/predict-buy:0.2.0",
            "--json",
        ])
        .ok();
    insta::assert_snapshot!("release_create_json", shown(&create_json));

    let list = ctx.run(["release", "list"]).ok();
    insta::assert_snapshot!("release_list", shown(&list));
    let list_json = ctx.run(["release", "list", "--json"]).ok();
    insta::assert_snapshot!("release_list_json", shown(&list_json));
    let show = ctx.run(["release", "show", "v0.1.0"]).ok();
    insta::assert_snapshot!("release_show", shown(&show));
    let show_json = ctx.run(["release", "show", "v0.2.0", "--json"]).ok();
    insta::assert_snapshot!("release_show_json", shown(&show_json));
    let unknown = ctx.run(["release", "show", "v9.9.9"]).code(2);
    insta::assert_snapshot!("release_show_unknown", shown(&unknown));

    // Two leftovers of killed writers: one old enough to remove, one a writer may
    // still own.
    let hour = Duration::from_secs(3600);
    leave_staging_file(&ctx, &format!("{}#3", "ab".repeat(32)), 1000, 2 * hour);
    leave_staging_file(&ctx, &format!("{}#4", "cd".repeat(32)), 500, Duration::ZERO);
    let verify = ctx.run(["model", "verify"]).ok();
    insta::assert_snapshot!("model_verify_leftovers", shown(&verify));
    let verify_json = ctx.run(["model", "verify", "--json"]).ok();
    insta::assert_snapshot!("model_verify_leftovers_json", shown(&verify_json));
    let dry = ctx.run(["registry", "gc", "--dry-run"]).ok();
    insta::assert_snapshot!("registry_gc_dry_run", shown(&dry));
    let gc = ctx.run(["registry", "gc"]).ok();
    insta::assert_snapshot!("registry_gc", shown(&gc));
    let gc_json = ctx
        .run(["registry", "gc", "--min-age", "0s", "--json"])
        .ok();
    insta::assert_snapshot!("registry_gc_json", shown(&gc_json));
    let verify = ctx.run(["model", "verify"]).ok();
    insta::assert_snapshot!("model_verify", shown(&verify));
    let bad_age = ctx.run(["registry", "gc", "--min-age", "8d"]).code(2);
    insta::assert_snapshot!("registry_gc_too_old", shown(&bad_age));
}

/// A `predict-buy serve --registry … --env nonprod` process on an ephemeral port,
/// killed on drop.
struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server on port 0 and reads the address it bound from its address file,
/// which it writes whole before it announces it.
fn serve(ctx: &TestContext, name: &str) -> Server {
    let addr_file: PathBuf = ctx.path().join(format!("{name}.addr"));
    let child = ctx
        .command()
        .args(["serve", "--registry"])
        .arg(ctx.registry_dir())
        .args(["--env", "nonprod", "--addr", "127.0.0.1:0", "--addr-file"])
        .arg(&addr_file)
        .args(["--poll-interval", "200ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start predict-buy serve");
    let mut server = Server {
        child,
        endpoint: String::new(),
    };
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file)
            && text.ends_with('\n')
        {
            server.endpoint = format!("http://{}", text.trim());
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("predict-buy serve exited before listening: {status}");
        }
        assert!(
            start.elapsed() < PATIENCE,
            "predict-buy serve never wrote {}",
            addr_file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_project(ctx: &TestContext, endpoints: &[&str]) {
    let list = endpoints.join(", ");
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        format!(
            "registry: file://.predict-buy/registry\n\
             require_git_tag: false\n\
             environments:\n  \
               nonprod:\n    branch: develop\n    target: local\n    endpoints: [{list}]\n  \
               prod:\n    branch: main\n    target: local\n    endpoints: [{list}]\n    require_verified_in: nonprod\n"
        ),
    )
    .expect("write predict-buy.yaml");
}

#[test]
fn deploy_output() {
    let mut ctx = TestContext::new();
    ctx.env("PREDICT_BUY_ADMIN_TOKEN", "snapshot-token");
    ctx.env("PREDICT_BUY_ACTOR", "snapshot-actor");
    let settings = insta_settings_registry(&ctx);
    let _guard = settings.bind_to_scope();
    let m = models();

    for (tag, model) in [("v0.1.0", &m.a), ("v0.2.0", &m.b), ("v0.3.0", &m.a)] {
        run_os(
            &ctx,
            &[
                "release".as_ref(),
                "create".as_ref(),
                tag.as_ref(),
                "--model".as_ref(),
                model.as_os_str(),
            ],
        )
        .ok();
    }
    let servers = [serve(&ctx, "one"), serve(&ctx, "two")];
    let endpoints: Vec<&str> = servers.iter().map(|s| s.endpoint.as_str()).collect();
    write_project(&ctx, &endpoints);

    let status = ctx.run(["status", "--env", "nonprod"]).ok();
    insta::assert_snapshot!("status_never_deployed", shown(&status));
    let unknown = ctx
        .run(["deploy", "v9.9.9", "--env", "nonprod", "--yes"])
        .code(2);
    insta::assert_snapshot!("deploy_unknown_release", shown(&unknown));

    let deploy = ctx
        .run(["deploy", "v0.1.0", "--env", "nonprod", "--yes"])
        .ok();
    insta::assert_snapshot!("deploy", shown(&deploy));
    let deploy_json = ctx
        .run(["deploy", "v0.2.0", "--env", "nonprod", "--yes", "--json"])
        .ok();
    insta::assert_snapshot!("deploy_json", shown(&deploy_json));
    assert_eq!(deploy_json.json()["outcome"], "verified");

    let rollback = ctx.run(["rollback", "--env", "nonprod", "--yes"]).ok();
    insta::assert_snapshot!("rollback", shown(&rollback));
    let rollback_json = ctx
        .run([
            "rollback", "--env", "nonprod", "--to", "v0.2.0", "--yes", "--json",
        ])
        .ok();
    insta::assert_snapshot!("rollback_json", shown(&rollback_json));

    let promote = ctx
        .run(["promote", "v0.2.0", "--to", "prod", "--dry-run"])
        .ok();
    insta::assert_snapshot!("promote_dry_run", shown(&promote));
    let noop = ctx
        .run(["promote", "v0.2.0", "--to", "nonprod", "--yes"])
        .ok();
    insta::assert_snapshot!("promote_noop", shown(&noop));
    let noop_json = ctx
        .run(["promote", "v0.2.0", "--to", "nonprod", "--yes", "--json"])
        .ok();
    insta::assert_snapshot!("promote_noop_json", shown(&noop_json));
    // v0.3.0 never ran in nonprod: prod's policy refuses it.
    let refused = ctx
        .run(["promote", "v0.3.0", "--to", "prod", "--yes"])
        .code(2);
    insta::assert_snapshot!("promote_policy_refusal", shown(&refused));

    let status = ctx.run(["status", "--env", "nonprod"]).ok();
    insta::assert_snapshot!("status", shown(&status));
    let status_json = ctx.run(["status", "--env", "nonprod", "--json"]).ok();
    insta::assert_snapshot!("status_json", shown(&status_json));
    let history = ctx.run(["history", "--env", "nonprod"]).ok();
    insta::assert_snapshot!("history", shown(&history));
    let history_json = ctx.run(["history", "--env", "nonprod", "--json"]).ok();
    insta::assert_snapshot!("history_json", shown(&history_json));

    // Another deploy holds the lease: refused before anything is announced.
    let registry = Registry::open(&RegistryUrl::File {
        root: ctx.registry_dir(),
    })
    .expect("open registry");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(registry.acquire_lease(
        &EnvName::parse("nonprod").unwrap(),
        "alice@ci (pid 42)",
        "deploy v0.3.0",
        Duration::from_secs(600),
    ))
    .expect("take the lease");
    let held = ctx
        .run(["deploy", "v0.1.0", "--env", "nonprod", "--yes"])
        .code(1);
    insta::assert_snapshot!("deploy_lease_held", shown(&held));
    let status = ctx.run(["status", "--env", "nonprod"]).ok();
    insta::assert_snapshot!("status_lease_held", shown(&status));
    drop(servers);
}
