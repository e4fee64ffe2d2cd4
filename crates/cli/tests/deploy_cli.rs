//! Deploy, rollback, promote, status and history through the real binary, against a
//! file:// registry and real `predict-buy serve` processes following `nonprod`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, TestContext, models, poll_until};
use predict_buy_registry::{EnvName, Registry, RegistryUrl, ReleaseTag};

const TOKEN: &str = "deploy-test-token";
/// Nothing listens here, and no test server can take it: ports under 1024 are
/// privileged, unlike the ephemeral ports our servers get.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";
/// A scratch project: a config with `nonprod` (the given endpoints) and `prod`
/// (requiring nonprod), releases v0.1.0 and v0.2.0 of two different models.
struct Project {
    ctx: TestContext,
}

impl Project {
    fn new(endpoints: &[String]) -> Self {
        let mut ctx = TestContext::new();
        ctx.env("PREDICT_BUY_ADMIN_TOKEN", TOKEN);
        let p = Project { ctx };
        p.set_endpoints(endpoints);
        p.create_releases();
        p
    }

    /// Point both environments at `endpoints`: servers are started after the project
    /// (they need its registry) and only then know their ports.
    fn set_endpoints(&self, endpoints: &[String]) {
        let list = endpoints.join(", ");
        std::fs::write(
            self.ctx.path().join("predict-buy.yaml"),
            format!(
                "registry: file://.predict-buy/registry\n\
                 require_git_tag: false\n\
                 environments:\n  \
                   nonprod:\n    branch: develop\n    target: local\n    endpoints: [{list}]\n  \
                   prod:\n    branch: main\n    target: local\n    endpoints: [{list}]\n    require_verified_in: nonprod\n"
            ),
        )
        .expect("write config");
    }

    fn create_releases(&self) {
        let ctx = &self.ctx;
        let m = models();
        for (tag, model) in [("v0.1.0", &m.a), ("v0.2.0", &m.b)] {
            ctx.run([
                OsStr::new("release"),
                OsStr::new("create"),
                OsStr::new(tag),
                OsStr::new("--model"),
                model.as_os_str(),
            ])
            .ok();
        }
    }

    fn registry(&self) -> Registry {
        Registry::open(&RegistryUrl::File {
            root: self.ctx.registry_dir(),
        })
        .expect("open registry")
    }

    fn serve(&self) -> Server {
        self.ctx.serve_env("nonprod", "200ms")
    }

    fn history(&self, env: &str) -> Vec<serde_json::Value> {
        let run = self.ctx.run(["history", "--env", env, "--json"]).ok();
        run.json().as_array().expect("an array").clone()
    }

    fn outcomes(&self, env: &str) -> Vec<(String, String)> {
        self.history(env)
            .iter()
            .map(|e| {
                (
                    e["outcome"].as_str().unwrap_or("").to_string(),
                    e["release"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

#[test]
fn bad_input_names_the_problem_and_exits_2() {
    // No config anywhere.
    let bare = TestContext::new();
    let run = bare
        .run(["deploy", "v0.1.0", "--env", "nonprod", "--yes"])
        .code(2);
    assert!(run.stderr.contains("no predict-buy.yaml"), "{run}");

    let p = Project::new(&[DEAD_ENDPOINT.to_string()]);
    let ctx = &p.ctx;
    let cases: &[(&[&str], &str)] = &[
        (
            &["deploy", "1.2.3", "--env", "nonprod", "--yes"],
            "missing leading `v`",
        ),
        (
            &["deploy", "v1.2", "--env", "nonprod", "--yes"],
            "three numbers",
        ),
        (
            &["deploy", "v9.9.9", "--env", "nonprod", "--yes"],
            "unknown release `v9.9.9`",
        ),
        (
            &["deploy", "v0.1.0", "--env", "staging", "--yes"],
            "unknown environment `staging`",
        ),
        // Not a git repository, so the branch cannot pick the environment.
        (&["deploy", "v0.1.0", "--yes"], "git branch"),
        // prod only takes releases verified in nonprod.
        (
            &["deploy", "v0.1.0", "--env", "prod", "--yes"],
            "never verified in `nonprod`",
        ),
        (
            &["promote", "v0.1.0", "--to", "prod", "--yes"],
            "never verified in `nonprod`",
        ),
        // stdin is not a terminal here.
        (
            &["deploy", "v0.1.0", "--env", "nonprod"],
            "without confirmation",
        ),
        (
            &["rollback", "--env", "nonprod", "--yes"],
            "no verified release",
        ),
        (
            &[
                "deploy",
                "v0.1.0",
                "--env",
                "nonprod",
                "--timeout",
                "soon",
                "--yes",
            ],
            "--timeout",
        ),
    ];
    for (args, needle) in cases {
        let run = ctx.run(*args).code(2);
        assert!(
            run.stderr.contains(needle),
            "{args:?} should say {needle:?}\n{run}"
        );
    }
    // Nothing above changed the environment.
    assert!(p.history("nonprod").is_empty());

    // A config with an unknown key names the key and the file.
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        "environments:\n  nonprod:\n    target: local\n    endpionts: []\n",
    )
    .unwrap();
    let run = ctx.run(["status", "--env", "nonprod"]).code(2);
    assert!(
        run.stderr.contains("endpionts") && run.stderr.contains("predict-buy.yaml"),
        "{run}"
    );

    // A key that does not apply to the target is named, not ignored.
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        "require_git_tag: false\nenvironments:\n  prod: {target: kubernetes, namespace: prod, endpoints: [http://127.0.0.1:9]}\n",
    )
    .unwrap();
    let run = ctx
        .run(["deploy", "v0.1.0", "--env", "prod", "--yes"])
        .code(2);
    assert!(
        run.stderr.contains("environments.prod.endpoints")
            && run
                .stderr
                .contains("does not apply to a `kubernetes` target"),
        "{run}"
    );
}

#[test]
fn git_tags_are_required_unless_the_config_says_otherwise() {
    let p = Project::new(&[DEAD_ENDPOINT.to_string()]);
    let ctx = &p.ctx;
    let config = ctx.path().join("predict-buy.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("require_git_tag: false\n", "")).unwrap();
    let run = ctx
        .run(["deploy", "v0.1.0", "--env", "nonprod", "--yes"])
        .code(2);
    assert!(run.stderr.contains("not in a git repository"), "{run}");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(ctx.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "develop"]);
    git(&["commit", "-q", "--allow-empty", "-m", "x"]);
    let run = ctx
        .run(["deploy", "v0.1.0", "--env", "nonprod", "--dry-run"])
        .code(2);
    assert!(
        run.stderr.contains("git tag `v0.1.0` does not exist"),
        "{run}"
    );
    git(&["tag", "v0.1.0"]);
    // On branch develop the environment is nonprod without --env.
    let run = ctx.run(["deploy", "v0.1.0", "--dry-run"]).ok();
    assert!(run.stdout.contains("deploy v0.1.0 to nonprod"), "{run}");
    assert!(p.history("nonprod").is_empty(), "a dry run changes nothing");

    // The CD workflow's gate, as the workflow calls it: the tag, the confirmation and
    // the environment chosen from the branch are all predict-buy's to check.
    let run = ctx
        .run(["deploy", "v0.1.0", "--confirm", "n", "--dry-run", "--json"])
        .code(1);
    assert!(
        run.stderr.contains("not confirmed (--confirm `n`)"),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
    let plan = ctx
        .run(["deploy", "v0.1.0", "--confirm", "y", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(plan["env"], "nonprod", "{plan}");
    assert_eq!(plan["release"], "v0.1.0", "{plan}");
    let run = ctx
        .run(["deploy", "v9.9.9", "--confirm", "y", "--dry-run", "--json"])
        .code(2);
    assert!(run.stderr.contains("v9.9.9"), "{run}");
    assert!(
        p.history("nonprod").is_empty(),
        "a refused gate changes nothing"
    );
}

#[test]
fn a_held_lease_refuses_a_second_deploy_naming_holder_and_time() {
    let p = Project::new(&[DEAD_ENDPOINT.to_string()]);
    let registry = p.registry();
    let env = EnvName::parse("nonprod").unwrap();
    let lease = rt()
        .block_on(registry.acquire_lease(
            &env,
            "alice@ci (pid 42)",
            "deploy v0.2.0",
            Duration::from_secs(60),
        ))
        .unwrap();
    let run = p
        .ctx
        .run(["deploy", "v0.1.0", "--env", "nonprod", "--yes"])
        .code(1);
    assert!(run.stderr.contains("alice@ci (pid 42)"), "{run}");
    assert!(
        run.stderr.contains(&format!("since {}", lease.acquired_at)),
        "{run}"
    );
    assert!(
        !run.stderr.contains("applying"),
        "a refused deploy announced progress\n{run}"
    );
    let status = p.ctx.run(["status", "--env", "nonprod"]).ok();
    assert!(
        status.stdout.contains("held by alice@ci (pid 42)"),
        "{status}"
    );
    assert!(
        p.history("nonprod").is_empty(),
        "a refused deploy records nothing"
    );
    // Recovering without waiting for expiry.
    let run = p
        .ctx
        .run(["status", "--env", "nonprod", "--break-lease"])
        .ok();
    assert!(
        run.stderr.contains("broke the lease of alice@ci (pid 42)"),
        "{run}"
    );
    assert!(run.stdout.contains("lease        free"), "{run}");
}

#[test]
fn a_crashed_deploy_leaves_an_expiring_lease_and_shows_interrupted() {
    // Nothing listens on the endpoint, so verification would wait for its timeout.
    let p = Project::new(&[DEAD_ENDPOINT.to_string()]);
    let ttl = Duration::from_secs(3);
    let mut deploy = p
        .ctx
        .command()
        .args(["deploy", "v0.1.0", "--env", "nonprod", "--yes"])
        .args(["--timeout", "120s", "--lease-ttl", "3s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while it verifies: after `started` is recorded *and* the desired release
    // is set. Killing between the two would leave nothing desired, a different story.
    let registry = p.registry();
    let env = EnvName::parse("nonprod").unwrap();
    let rt = rt();
    poll_until("the deploy reaches verification", || {
        let desired = rt
            .block_on(registry.env_state(&env))
            .unwrap()
            .and_then(|s| s.desired);
        desired.is_some_and(|d| d.to_string() == "v0.1.0")
            && p.outcomes("nonprod").iter().any(|(o, _)| o == "started")
    });
    deploy.kill().unwrap(); // SIGKILL: no cleanup runs.
    deploy.wait().unwrap();
    let killed = Instant::now();
    let status = p.ctx.run(["status", "--env", "nonprod"]).ok();
    // The lease is renewed every third of its TTL, so it lives at least two thirds of
    // the TTL past the kill; only a status read within that window can check it.
    if killed.elapsed() < ttl * 2 / 3 {
        assert!(
            !status.stdout.contains("interrupted"),
            "lease still active\n{status}"
        );
    }
    poll_until("the lease expires and status says interrupted", || {
        let status = p.ctx.run(["status", "--env", "nonprod"]).ok();
        status.stdout.contains("state        interrupted")
    });
    let json = p
        .ctx
        .run(["status", "--env", "nonprod", "--json"])
        .ok()
        .json();
    assert_eq!(json["interrupted"]["release"], "v0.1.0");
    assert_eq!(json["lease_active"], false);

    // The next deploy takes the expired lease and closes the dangling entry. The
    // endpoint is unreachable, which blames the environment, not the release.
    let run = p
        .ctx
        .run([
            "deploy",
            "v0.1.0",
            "--env",
            "nonprod",
            "--yes",
            "--timeout",
            "500ms",
        ])
        .code(1);
    assert!(
        run.stderr
            .contains("could not be verified (it is not marked failed)"),
        "{run}"
    );
    assert_eq!(
        p.outcomes("nonprod"),
        pairs(&[
            ("started", "v0.1.0"),
            ("interrupted", "v0.1.0"),
            ("started", "v0.1.0"),
            ("unverified", "v0.1.0"),
            // Nothing verified to return to: the desired release stays as it was.
            ("unverified", "v0.1.0"),
        ])
    );
    let status = p.ctx.run(["status", "--env", "nonprod"]).ok();
    assert!(status.stdout.contains("lease        free"), "{status}");
}

#[test]
fn wrong_golden_predictions_or_a_server_that_never_gets_there_roll_back() {
    let p = Project::new(&[]);
    let server = p.serve();
    p.set_endpoints(std::slice::from_ref(&server.endpoint));
    // A wrong admin token: the server refuses the reload nudge, the deploy says so
    // loudly, and still verifies once the server's own polling catches up.
    let out = p
        .ctx
        .command()
        .args(["deploy", "v0.1.0", "--env", "nonprod", "--yes", "--json"])
        .env("PREDICT_BUY_ADMIN_TOKEN", "not-the-token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("refused the reload nudge with 401"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "verified");
    assert!(
        report["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("401")),
        "{report}"
    );

    let registry = p.registry();
    let rt = rt();
    // v0.3.0: model a, but golden predictions that model does not make.
    let mut bad = rt
        .block_on(registry.get_release(&ReleaseTag::parse("v0.1.0").unwrap()))
        .unwrap();
    bad.tag = ReleaseTag::parse("v0.3.0").unwrap();
    bad.golden[0].probability = (bad.golden[0].probability + 0.125).min(1.0) / 2.0;
    rt.block_on(registry.create_release(&bad)).unwrap();
    // v0.4.0: bytes no server can load, so no server ever reports it.
    let junk = rt
        .block_on(registry.push_bytes(b"not a model".to_vec().into()))
        .unwrap();
    let mut unloadable = bad.clone();
    unloadable.tag = ReleaseTag::parse("v0.4.0").unwrap();
    unloadable.model_digest = junk.digest;
    rt.block_on(registry.create_release(&unloadable)).unwrap();

    let started = Instant::now();
    let run = p
        .ctx
        .run(["deploy", "v0.3.0", "--env", "nonprod", "--yes", "--json"])
        .code(1);
    let report = run.json();
    assert_eq!(report["outcome"], "rolled_back", "{run}");
    assert_eq!(report["rolled_back_to"], "v0.1.0");
    assert_eq!(report["failure"]["wrong_answer"], true, "{run}");
    assert!(
        report["failure"]["problem"]
            .as_str()
            .unwrap()
            .contains("golden input 0"),
        "{run}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a wrong answer fails fast"
    );

    let run = p
        .ctx
        .run([
            "deploy",
            "v0.4.0",
            "--env",
            "nonprod",
            "--yes",
            "--timeout",
            "2s",
            "--json",
        ])
        .code(1);
    // The reload nudge is answered with 422: the release itself is refused, which
    // blames it at once rather than after the timeout.
    let report = run.json();
    assert_eq!(report["outcome"], "rolled_back", "{run}");
    assert_eq!(report["failure"]["wrong_answer"], false, "{run}");
    assert_eq!(report["failure"]["kind"], "refused_to_load", "{run}");
    assert!(
        report["failure"]["problem"]
            .as_str()
            .unwrap()
            .contains("the server refused to load the release"),
        "{run}"
    );

    assert_eq!(
        p.outcomes("nonprod"),
        pairs(&[
            ("started", "v0.1.0"),
            ("verified", "v0.1.0"),
            ("started", "v0.3.0"),
            ("failed", "v0.3.0"),
            ("rolled_back", "v0.1.0"),
            ("started", "v0.4.0"),
            ("failed", "v0.4.0"),
            ("rolled_back", "v0.1.0"),
        ])
    );
    let state = p
        .ctx
        .run(["status", "--env", "nonprod", "--json"])
        .ok()
        .json();
    assert_eq!(state["state"]["desired"], "v0.1.0");
    // A failed release is never a rollback target.
    let run = p
        .ctx
        .run(["rollback", "--env", "nonprod", "--to", "v0.3.0", "--yes"])
        .code(2);
    assert!(
        run.stderr.contains("only returns to a verified release"),
        "{run}"
    );
    // And a failed release cannot be promoted.
    let run = p
        .ctx
        .run(["promote", "v0.3.0", "--to", "prod", "--yes"])
        .code(2);
    assert!(run.stderr.contains("never verified in `nonprod`"), "{run}");
}

/// Journey 4 under load: two real servers follow nonprod while a load generator hits
/// both; v0.1.0 → v0.2.0 → rollback to v0.1.0, each verified, and not one request
/// fails. Verification times are printed, not asserted: on a loaded machine they say
/// more about the machine than about the code.
#[test]
fn two_servers_follow_nonprod_under_load_with_no_failed_request() {
    let p = Project::new(&[]);
    let servers = [p.serve(), p.serve()];
    let endpoints: Vec<String> = servers.iter().map(|s| s.endpoint.clone()).collect();
    p.set_endpoints(&endpoints);

    let deploy = |args: &[&str]| -> serde_json::Value {
        let run = p.ctx.run(args).ok();
        let report = run.json();
        assert_eq!(report["outcome"], "verified", "{run}");
        report
    };
    let first = deploy(&["deploy", "v0.1.0", "--env", "nonprod", "--yes", "--json"]);

    let golden = rt()
        .block_on(
            p.registry()
                .get_release(&ReleaseTag::parse("v0.1.0").unwrap()),
        )
        .unwrap()
        .golden[0]
        .input
        .to_string();
    let load = Load::start(&endpoints, golden);
    // Each step waits until the load has seen it, however slow the machine is.
    poll_until("load answered by v0.1.0", || load.seen("v0.1.0") > 0);
    let up = deploy(&["deploy", "v0.2.0", "--env", "nonprod", "--yes", "--json"]);
    poll_until("load answered by v0.2.0", || load.seen("v0.2.0") > 0);
    let down = deploy(&["rollback", "--env", "nonprod", "--yes", "--json"]);
    let before = load.seen("v0.1.0");
    poll_until("load answered by v0.1.0 again", || {
        load.seen("v0.1.0") > before
    });
    let stats = load.stop();

    assert_eq!(
        down["release"], "v0.1.0",
        "rollback returns to the last verified release"
    );
    for (name, r) in [
        ("deploy v0.1.0", &first),
        ("deploy v0.2.0", &up),
        ("rollback v0.1.0", &down),
    ] {
        let ms = r["verify_ms"].as_f64().expect("verify time");
        println!(
            "{name}: verified in {ms:.0} ms ({})",
            r["endpoint_verify_ms"]
        );
    }
    println!(
        "load: {} ok, {} failed, by version {:?}",
        stats.ok, stats.failed, stats.by_version
    );
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.failures);
    assert_eq!(
        p.outcomes("nonprod"),
        pairs(&[
            ("started", "v0.1.0"),
            ("verified", "v0.1.0"),
            ("started", "v0.2.0"),
            ("verified", "v0.2.0"),
            ("started", "v0.1.0"),
            ("verified", "v0.1.0"),
        ])
    );
    // prod takes v0.2.0 now that nonprod verified it (the dry run changes nothing).
    let run = p
        .ctx
        .run(["promote", "v0.2.0", "--to", "prod", "--dry-run"])
        .ok();
    assert!(
        run.stdout
            .contains("promote (verified in nonprod) v0.2.0 to prod"),
        "{run}"
    );
    let table = p.ctx.run(["history", "--env", "nonprod"]).ok();
    assert!(
        table.stdout.contains("OUTCOME") && table.stdout.contains("rollback from v0.2.0"),
        "{table}"
    );

    // Promoting what an environment already runs, verified, does nothing.
    let run = p
        .ctx
        .run(["promote", "v0.1.0", "--to", "nonprod", "--yes"])
        .ok();
    assert!(
        run.stdout
            .contains("v0.1.0 already runs on nonprod, verified: nothing to do"),
        "{run}"
    );
    assert_eq!(p.history("nonprod").len(), 6, "nothing recorded");

    // The reproduction: one server stops. v0.2.0 cannot be verified, and
    // neither can the rollback to v0.1.0; neither release is blamed.
    let [alive, stopped] = servers;
    drop(stopped);
    let run = p
        .ctx
        .run([
            "deploy",
            "v0.2.0",
            "--env",
            "nonprod",
            "--yes",
            "--timeout",
            "3s",
            "--json",
        ])
        .code(1);
    let report = run.json();
    assert_eq!(report["outcome"], "unverified", "{run}");
    assert_eq!(report["failure"]["kind"], "unreachable", "{run}");
    assert_eq!(report["rollback"], "unverified", "{run}");
    assert_eq!(report["rolled_back_to"], "v0.1.0", "{run}");
    assert_eq!(
        p.outcomes("nonprod")[6..],
        pairs(&[
            ("started", "v0.2.0"),
            ("unverified", "v0.2.0"),
            ("unverified", "v0.1.0"),
        ])
    );
    // Both are still good: prod may take either, and v0.1.0 stays a rollback target.
    for tag in ["v0.1.0", "v0.2.0"] {
        let run = p
            .ctx
            .run(["promote", tag, "--to", "prod", "--dry-run"])
            .ok();
        assert!(
            run.stdout
                .contains(&format!("promote (verified in nonprod) {tag} to prod")),
            "{run}"
        );
    }
    drop(alive);
}

/// What the load generator saw.
#[derive(Debug, Default)]
struct LoadStats {
    ok: u64,
    failed: u64,
    /// The first few failures.
    failures: Vec<String>,
    /// Successful answers per `model_version`.
    by_version: BTreeMap<String, u64>,
}

/// Two threads per endpoint firing `POST /predict` (plain HTTP/1.1 over std, one
/// connection per request) until stopped; every answer that is not 200 with a
/// prediction counts as failed.
struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<LoadStats>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(endpoints: &[String], body: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let mut threads = Vec::new();
        for endpoint in endpoints {
            let addr = endpoint.trim_start_matches("http://").to_string();
            for _ in 0..2 {
                let (stop, stats, addr, body) = (
                    Arc::clone(&stop),
                    Arc::clone(&stats),
                    addr.clone(),
                    body.clone(),
                );
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let result = predict(&addr, &body);
                        let mut s = stats.lock().unwrap();
                        match result {
                            Ok(version) => {
                                s.ok += 1;
                                *s.by_version.entry(version).or_default() += 1;
                            }
                            Err(e) => {
                                s.failed += 1;
                                if s.failures.len() < 10 {
                                    s.failures.push(format!("{addr}: {e}"));
                                }
                            }
                        }
                        drop(s);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }));
            }
        }
        Load {
            stop,
            stats,
            threads,
        }
    }

    /// Successful answers from `version` so far.
    fn seen(&self, version: &str) -> u64 {
        let stats = self.stats.lock().unwrap();
        stats.by_version.get(version).copied().unwrap_or(0)
    }

    fn stop(self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load threads do not panic");
        }
        Arc::try_unwrap(self.stats)
            .expect("threads are done")
            .into_inner()
            .unwrap()
    }
}

/// One `POST /predict`; the answering `model_version`.
fn predict(addr: &str, body: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST /predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let (head, json) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no body in {answer:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    let json: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("{e}: {json}"))?;
    if json.get("predicted_class").is_none() {
        return Err(format!("not a prediction: {json}"));
    }
    json["model_version"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no model_version: {json}"))
}

/// Journey 6: from an empty folder to a verified local deploy, then the commands it
/// points to work there.
#[test]
fn quickstart_from_nothing_to_a_verified_deploy() {
    let ctx = TestContext::new();
    // quickstart writes its port into the config it creates, so it cannot take port 0;
    // this is the one test left with a bind-release-bind window.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port();
    let dir = ctx.path().join("fresh");
    let run = ctx
        .run([
            OsStr::new("quickstart"),
            OsStr::new("--dir"),
            dir.as_os_str(),
            OsStr::new("--port"),
            OsStr::new(&port.to_string()),
            OsStr::new("--rows"),
            OsStr::new("5000"),
            OsStr::new("--no-serve"),
        ])
        .ok();
    assert!(
        run.stdout.contains("v0.1.0 is verified on nonprod"),
        "{run}"
    );
    // --no-serve stops the server, so there is nothing to curl.
    assert!(!run.stdout.contains("curl"), "{run}");
    assert!(
        run.stdout.contains(&format!("--addr 127.0.0.1:{port}")),
        "{run}"
    );
    let config = std::fs::read_to_string(dir.join("predict-buy.yaml")).unwrap();
    assert!(config.contains("require_git_tag: false"), "{config}");
    let status = ctx
        .run_in(&dir, ["status", "--env", "nonprod", "--json"])
        .ok()
        .json();
    assert_eq!(status["state"]["desired"], "v0.1.0");
    assert_eq!(status["last"]["outcome"], "verified");
    // The server stopped with quickstart: the port is free again.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// An unreachable registry fails the deploy within seconds, naming the endpoint, and
/// leaves nothing behind (there is nowhere to leave it).
#[test]
fn an_unreachable_registry_fails_cleanly() {
    let p = Project::new(&[DEAD_ENDPOINT.to_string()]);
    let endpoint = DEAD_ENDPOINT;
    let mut cmd = p.ctx.command();
    cmd.args([
        "deploy",
        "v0.1.0",
        "--env",
        "nonprod",
        "--yes",
        "--registry",
        "s3://predict-buy-test/reg",
    ])
    .env("AWS_ENDPOINT_URL", endpoint)
    .env("AWS_ACCESS_KEY_ID", "test")
    .env("AWS_SECRET_ACCESS_KEY", "test")
    .env("AWS_REGION", "us-east-1");
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The file registry of the project was not touched either.
    assert!(p.history("nonprod").is_empty());
}
