//! `deploy --canary` end to end through the real binary: a file:// registry, two real
//! `predict-buy serve` processes following `nonprod` and splitting traffic by a hash of
//! `x-request-id`, and keyed traffic sent over real HTTP while the analysis runs.

mod common;
#[path = "support/canary.rs"]
mod support;

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, TestContext, models, poll_until};
use predict_buy_registry::{CandidateMode, EnvName, Registry, RegistryUrl, ReleaseTag};
use support::{bodies, everyone_buys};

/// A project whose `nonprod` has two servers, with releases v0.1.0 (model a), v0.2.0
/// (model a again: a rebuild that behaves the same, the healthy candidate) and v0.3.0
/// (the everyone-buys model), and v0.1.0 deployed and verified.
///
/// The healthy candidate is the same model because the shared test models differ in
/// tree count, and with 5 and 8 shallow trees their scores fall in different score
/// buckets altogether: a canary of one against the other fails on `score_psi` (about
/// 7), which is the analysis working, not a healthy candidate.
struct Env {
    ctx: TestContext,
    servers: Vec<Server>,
}

impl Env {
    fn new() -> Self {
        let ctx = TestContext::new();
        let m = models();
        for (tag, model) in [
            ("v0.1.0", m.a.as_path()),
            ("v0.2.0", m.a.as_path()),
            ("v0.3.0", everyone_buys()),
        ] {
            ctx.run([
                OsStr::new("release"),
                OsStr::new("create"),
                OsStr::new(tag),
                OsStr::new("--model"),
                model.as_os_str(),
            ])
            .ok();
        }
        let mut env = Env {
            ctx,
            servers: Vec::new(),
        };
        env.write_config(&[]);
        env.servers = vec![env.serve(), env.serve()];
        let endpoints: Vec<String> = env.servers.iter().map(|s| s.endpoint.clone()).collect();
        env.write_config(&endpoints);
        env.ctx
            .run(["deploy", "v0.1.0", "--env", "nonprod", "--yes"])
            .ok();
        env
    }

    /// Short analysis settings: `min_requests` low, so a test needs hundreds of
    /// requests, not thousands. At that size a same-model candidate's positive rate
    /// and score histogram differ from the baseline's by sampling noise alone, so
    /// those two limits sit above the noise and far below an everyone-buys model's
    /// gap (about 0.7); the other thresholds are the defaults.
    fn write_config(&self, endpoints: &[String]) {
        std::fs::write(
            self.ctx.path().join("predict-buy.yaml"),
            format!(
                "registry: file://.predict-buy/registry\n\
                 require_git_tag: false\n\
                 environments:\n  \
                   nonprod:\n    target: local\n    endpoints: [{}]\n    \
                     canary: {{min_requests: 100, interval: 300ms, \
                       max_positive_rate_diff: 0.35, max_score_psi: 1.0}}\n",
                endpoints.join(", ")
            ),
        )
        .unwrap();
    }

    fn serve(&self) -> Server {
        self.ctx.serve_env("nonprod", "200ms")
    }

    fn registry(&self) -> Registry {
        Registry::open(&RegistryUrl::File {
            root: self.ctx.registry_dir(),
        })
        .unwrap()
    }

    fn history(&self) -> Vec<serde_json::Value> {
        let run = self.ctx.run(["history", "--env", "nonprod", "--json"]).ok();
        run.json().as_array().unwrap().clone()
    }

    fn desired(&self) -> Option<String> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(self.registry().env_state(&nonprod()))
            .unwrap()
            .and_then(|s| s.desired)
            .map(|t| t.to_string())
    }

    fn candidate(&self) -> Option<predict_buy_registry::Candidate> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(self.registry().candidate(&nonprod())).unwrap()
    }

    fn canary(&self, tag: &str, args: &[&str]) -> Child {
        self.ctx
            .command()
            .args(["deploy", tag, "--env", "nonprod", "--yes", "--json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Keyed traffic to every server until dropped.
    fn traffic(&self) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let addrs: Vec<String> = self
            .servers
            .iter()
            .map(|s| s.endpoint.trim_start_matches("http://").to_string())
            .collect();
        let thread = {
            let (stop, seen, sent) = (stop.clone(), seen.clone(), sent.clone());
            std::thread::spawn(move || {
                let bodies = bodies();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let addr = &addrs[i % addrs.len()];
                    let body = &bodies[i % bodies.len()];
                    if let Ok(version) = predict(addr, &format!("customer-{i}"), body) {
                        *seen.lock().unwrap().entry(version).or_insert(0u64) += 1;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        };
        Traffic {
            stop,
            seen,
            thread: Some(thread),
        }
    }
}

fn nonprod() -> EnvName {
    EnvName::parse("nonprod").unwrap()
}

struct Traffic {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// Answers per `model_version` so far.
    fn seen(&self) -> std::collections::BTreeMap<String, u64> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `POST /predict` with `x-request-id: key`; the answering `model_version`.
fn predict(addr: &str, key: &str, body: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST /predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nx-request-id: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let (head, json) = answer.split_once("\r\n\r\n").ok_or("no body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{head}: {json}"));
    }
    let json: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    json["model_version"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no model_version: {json}"))
}

/// Wait for a child and return (exit code, stdout, stderr).
fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_entries(env: &Env, n: usize) -> Vec<(String, String, String)> {
    let h = env.history();
    h[h.len().saturating_sub(n)..]
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap().to_string(),
                e["release"].as_str().unwrap_or("-").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_healthy_canary_shows_in_status_passes_and_is_promoted() {
    let env = Env::new();
    let traffic = env.traffic();
    let child = env.canary("v0.2.0", &["--canary", "30%", "--analysis", "6s"]);
    // While it runs, status names it and its share, and has metrics.
    poll_until("status shows the running canary with traffic", || {
        let json = env
            .ctx
            .run(["status", "--env", "nonprod", "--json"])
            .ok()
            .json();
        json["canary"]["release"] == "v0.2.0"
            && json["canary"]["percent"] == 30.0
            && json["canary"]["metrics"]["candidate"]["requests"]
                .as_u64()
                .is_some_and(|n| n > 0)
    });
    let text = env.ctx.run(["status", "--env", "nonprod"]).ok();
    assert!(
        text.stdout
            .contains("canary       v0.2.0 at 30% beside v0.1.0"),
        "{text}"
    );
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "promoted", "{report}");
    assert_eq!(report["baseline"], "v0.1.0");
    let candidate_requests = report["metrics"]["candidate"]["requests"].as_u64().unwrap();
    let baseline_requests = report["metrics"]["baseline"]["requests"].as_u64().unwrap();
    assert!(candidate_requests >= 100, "{report}");
    // The split follows the share: 30% of keys, within sampling noise.
    let share = candidate_requests as f64 / (candidate_requests + baseline_requests) as f64;
    assert!((0.2..0.4).contains(&share), "candidate share {share}");
    let entries = last_entries(&env, 2);
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.as_str()),
        ("started", "v0.2.0")
    );
    assert_eq!(
        (entries[1].0.as_str(), entries[1].1.as_str()),
        ("verified", "v0.2.0")
    );
    assert!(entries[1].2.starts_with("canary passed"), "{entries:?}");
    assert_eq!(env.desired().as_deref(), Some("v0.2.0"));
    assert!(env.candidate().is_none());
    let seen = traffic.seen();
    assert!(seen.get("v0.2.0").is_some_and(|n| *n > 0), "{seen:?}");
}

#[test]
fn a_candidate_whose_positive_rate_differs_wildly_fails_and_the_baseline_keeps_serving() {
    let env = Env::new();
    let traffic = env.traffic();
    let child = env.canary("v0.3.0", &["--canary", "30", "--analysis", "5000"]);
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "failed", "{report}");
    let failures = report["failures"].as_array().unwrap();
    let positive = failures
        .iter()
        .find(|f| f["metric"] == "positive_rate")
        .unwrap_or_else(|| panic!("no positive_rate failure in {report}"));
    assert!(positive["candidate"].as_f64().unwrap() > 0.8, "{positive}");
    assert!(positive["baseline"].as_f64().unwrap() < 0.5, "{positive}");
    // It failed fast: well before 5000 requests.
    assert!(
        report["metrics"]["candidate"]["requests"].as_u64().unwrap() < 1500,
        "{report}"
    );
    let entries = last_entries(&env, 1);
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.as_str()),
        ("failed", "v0.3.0")
    );
    assert!(
        entries[0].2.contains("positive_rate: candidate"),
        "{entries:?}"
    );
    assert_eq!(env.desired().as_deref(), Some("v0.1.0"));
    assert!(env.candidate().is_none());
    // Once every server has dropped the candidate, only the baseline answers.
    drop(traffic);
    let addr = env.servers[0].endpoint.trim_start_matches("http://");
    let body = &bodies()[0];
    poll_until("the servers drop the candidate", || {
        (0..40).all(|i| predict(addr, &format!("after-{i}"), body).as_deref() == Ok("v0.1.0"))
    });
}

#[test]
fn a_second_canary_is_refused_and_ctrl_c_drops_the_first() {
    let env = Env::new();
    let _traffic = env.traffic();
    let first = env.canary("v0.2.0", &["--canary", "10%", "--analysis", "10m"]);
    poll_until("the first canary's record exists", || {
        env.candidate().is_some()
    });
    // Refused by the lease.
    let second = env
        .ctx
        .run([
            "deploy", "v0.3.0", "--env", "nonprod", "--yes", "--canary", "10%",
        ])
        .code(1);
    assert!(second.stderr.contains("lease"), "{second}");
    assert!(second.stderr.contains("canary v0.2.0 at 10%"), "{second}");

    // Ctrl-C: the canary is dropped and recorded, and the deploy exits 1.
    let pid = first.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let (code, stdout, stderr) = finish(first);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "interrupted", "{report}");
    let entries = last_entries(&env, 1);
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.as_str()),
        ("interrupted", "v0.2.0")
    );
    assert!(entries[0].2.contains("SIGINT"), "{entries:?}");
    assert!(env.candidate().is_none());
    assert_eq!(env.desired().as_deref(), Some("v0.1.0"));
    let status = env.ctx.run(["status", "--env", "nonprod"]).ok();
    assert!(status.stdout.contains("lease        free"), "{status}");
    assert!(!status.stdout.contains("canary  "), "{status}");
}

#[test]
fn a_canary_is_refused_while_a_shadow_holds_the_candidate_record() {
    let env = Env::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(env.registry().set_candidate(
        &nonprod(),
        &ReleaseTag::parse("v0.3.0").unwrap(),
        CandidateMode::Shadow,
        "someone",
    ))
    .unwrap();
    let run = env
        .ctx
        .run([
            "deploy", "v0.2.0", "--env", "nonprod", "--yes", "--canary", "10%",
        ])
        // Refused as asked, like a second `shadow start`: bad input.
        .code(2);
    assert!(
        run.stderr
            .contains("already has a candidate (shadow of v0.3.0)"),
        "{run}"
    );
    assert!(run.stderr.contains("predict-buy shadow stop"), "{run}");
    // Nothing changed: no history entry, the shadow's record stands.
    assert_eq!(last_entries(&env, 1)[0].0, "verified");
    assert_eq!(env.candidate().unwrap().release.to_string(), "v0.3.0");
}

#[test]
fn bad_canary_arguments_are_bad_input() {
    let ctx = TestContext::new();
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        "registry: file://.predict-buy/registry\nrequire_git_tag: false\n\
         environments:\n  nonprod: {target: local, endpoints: [http://127.0.0.1:9]}\n",
    )
    .unwrap();
    ctx.run([
        OsStr::new("release"),
        OsStr::new("create"),
        OsStr::new("v0.1.0"),
        OsStr::new("--model"),
        models().a.as_os_str(),
    ])
    .ok();
    for (args, needle) in [
        (
            vec!["--canary", "150%"],
            "--canary `150%`: must be above 0%",
        ),
        (
            vec!["--canary", "10%", "--analysis", "soon"],
            "--analysis `soon`",
        ),
        (
            vec!["--canary", "10%"],
            "serves no release, so a canary of `v0.1.0` has nothing to be compared with",
        ),
    ] {
        let mut all = vec!["deploy", "v0.1.0", "--env", "nonprod", "--yes"];
        all.extend(args);
        let run = ctx.run(all).code(2);
        assert!(run.stderr.contains(needle), "{needle}\n{run}");
    }
}

#[test]
fn a_lost_lease_drops_the_canary() {
    let env = Env::new();
    let _traffic = env.traffic();
    let child = env.canary(
        "v0.2.0",
        &["--canary", "10%", "--analysis", "10m", "--lease-ttl", "3s"],
    );
    poll_until("the canary's record exists", || env.candidate().is_some());
    // Someone breaks the lease (as after a crash): the canary's next renewal finds it
    // gone, and the canary stops rather than judge without it.
    env.ctx
        .run(["status", "--env", "nonprod", "--break-lease"])
        .ok();
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "interrupted", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("lease was lost"),
        "{report}"
    );
    let entries = last_entries(&env, 1);
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.as_str()),
        ("interrupted", "v0.2.0")
    );
    assert!(env.candidate().is_none());
    assert_eq!(env.desired().as_deref(), Some("v0.1.0"));
}
