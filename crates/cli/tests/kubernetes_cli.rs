//! `deploy`, `promote`, `rollback`, `status` and `render` on Kubernetes environments,
//! through the real `predict-buy` binary.
//!
//! No cluster can run on these machines, so these tests run against an in-process
//! **SIMULATOR** of the Kubernetes API (`crates/kube-sim`) over real HTTP on
//! 127.0.0.1: the CLI under test reaches it through `KUBECONFIG` with kube-rs's real
//! client, and the simulator's pods are real `predict-buy serve --release …` processes
//! (the same binary), so the service proxy, the readiness probes and the golden checks
//! all talk to real servers. Passing here is evidence, not proof, that the target works
//! on a cluster; `real_cluster_*` runs the same journey against a real one when
//! `PREDICT_BUY_TEST_KUBECONFIG` is set.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Run, TestContext, insta_settings, models, poll_until, sim_serve_runtime};
use predict_buy_kube_sim::{Scenario, SimHandle, SimOptions, Simulator};
use serde_json::{Value, json};

/// The name of every object predict-buy manages in a namespace.
const APP: &str = "predict-buy";
/// The verify timeout of deploys expected to succeed: generous, because a pod is a
/// real process that must start and load its model on a busy machine.
const TIMEOUT: &str = "60s";

/// A simulator on its own runtime (the CLI runs as child processes, so the test
/// itself stays synchronous), with its kubeconfig on disk.
struct Sim {
    handle: SimHandle,
    kubeconfig: PathBuf,
    // Declared last: dropped after the handle, so the pods' processes are killed by
    // the tasks the runtime drops.
    _rt: tokio::runtime::Runtime,
}

impl Sim {
    fn start(options: SimOptions, dir: &Path) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let handle = rt
            .block_on(Simulator::start(options))
            .expect("the simulator starts");
        let kubeconfig = dir.join("kubeconfig");
        handle.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Sim {
            handle,
            kubeconfig,
            _rt: rt,
        }
    }

    fn deployment(&self, ns: &str) -> Option<Value> {
        self.handle.object("deployments", ns, APP)
    }

    /// The Deployment's predict-buy annotations, as `kubectl get -o yaml` shows them.
    fn annotations(&self, ns: &str) -> BTreeMap<String, String> {
        let d = self
            .deployment(ns)
            .unwrap_or_else(|| panic!("no Deployment in namespace {ns}"));
        serde_json::from_value(d["metadata"]["annotations"].clone()).expect("annotations")
    }

    /// The release in the Deployment's pod template: what the cluster runs.
    fn template_release(&self, ns: &str) -> Option<String> {
        let d = self.deployment(ns)?;
        d["spec"]["template"]["metadata"]["annotations"]["predict-buy.dev/release"]
            .as_str()
            .map(str::to_string)
    }

    /// The releases of the ready pods, sorted.
    fn ready_pod_releases(&self, ns: &str) -> Vec<String> {
        let mut releases: Vec<String> = self
            .handle
            .objects("pods", ns)
            .iter()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .filter_map(|p| {
                p["metadata"]["labels"]["app.kubernetes.io/version"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        releases.sort();
        releases
    }
}

/// A scratch project whose registry is a file:// folder and whose environments are
/// namespaces on a simulator.
struct Project {
    ctx: TestContext,
    sim: Sim,
}

impl Project {
    /// `environments` is the YAML under `environments:`, indented by two spaces.
    fn new(options: SimOptions, environments: &str) -> Project {
        let mut ctx = TestContext::new();
        let options = options.runtime(sim_serve_runtime(ctx.path().to_path_buf()));
        let sim = Sim::start(options, ctx.path());
        ctx.env("KUBECONFIG", &sim.kubeconfig.display().to_string());
        let p = Project { ctx, sim };
        p.write_config(environments);
        p
    }

    fn write_config(&self, environments: &str) {
        std::fs::write(
            self.ctx.path().join("predict-buy.yaml"),
            format!(
                "registry: file://{}\nrequire_git_tag: false\nenvironments:\n{environments}",
                self.ctx.registry_dir().display()
            ),
        )
        .expect("write predict-buy.yaml");
    }

    /// `release create TAG --model M`; models `a` and `b` differ, so do their answers.
    fn release(&self, tag: &str, model: &Path) {
        self.run([
            OsStr::new("release"),
            OsStr::new("create"),
            OsStr::new(tag),
            OsStr::new("--model"),
            model.as_os_str(),
        ])
        .ok();
    }

    fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ctx.run(args)
    }

    fn deploy(&self, tag: &str, env: &str, timeout: &str) -> Run {
        self.run(["deploy", tag, "--env", env, "--yes", "--timeout", timeout])
    }

    /// `(outcome, release)` of every history entry, oldest first.
    fn history(&self, env: &str) -> Vec<(String, String)> {
        let run = self.run(["history", "--env", env, "--json"]).ok();
        run.json()
            .as_array()
            .expect("history is an array")
            .iter()
            .map(|e| {
                (
                    e["outcome"].as_str().unwrap_or_default().to_string(),
                    e["release"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }

    fn history_messages(&self, env: &str) -> Vec<String> {
        let run = self.run(["history", "--env", env, "--json"]).ok();
        run.json()
            .as_array()
            .expect("history is an array")
            .iter()
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The registry's desired release of `env`, from `status --json`.
    fn desired(&self, env: &str) -> Option<String> {
        let status = self.run(["status", "--env", env, "--json"]).ok().json();
        status["state"]["desired"].as_str().map(str::to_string)
    }

    /// The first golden input of a release: a request its servers answer.
    fn golden_input(&self, tag: &str) -> Value {
        let shown = self.run(["release", "show", tag, "--json"]).ok().json();
        shown["golden"][0]["input"].clone()
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Sends `POST /predict` through the API server's service proxy, one request after
/// another, until stopped; counts answers and keeps every failure.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

fn proxied_predict(addr: SocketAddr, ns: &str, body: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST /api/v1/namespaces/{ns}/services/{APP}:http/proxy/predict HTTP/1.1\r\n\
         Host: {addr}\r\nAuthorization: Bearer kube-sim-token\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    if response.starts_with("HTTP/1.1 200") && response.contains("predicted_class") {
        Ok(())
    } else {
        Err(response)
    }
}

impl Load {
    fn start(addr: SocketAddr, ns: &str, body: &Value) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, body, flag) = (ns.to_string(), body.to_string(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match proxied_predict(addr, &ns, &body) {
                    Ok(()) => ok += 1,
                    Err(e) => failures.push(e),
                }
                // Leave the two cores to the deploys this load watches.
                std::thread::sleep(Duration::from_millis(10));
            }
            (ok, failures)
        });
        Load { stop, thread }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .expect("the load generator does not panic")
    }
}

const STAGING_PROD: &str = "  staging:\n    target: kubernetes\n    namespace: staging\n    replicas: 2\n  \
     prod:\n    target: kubernetes\n    namespace: prod\n    replicas: 1\n    require_verified_in: staging\n";

#[test]
fn deploy_verify_auto_rollback_manual_rollback_and_promote_without_a_failed_request() {
    let m = models();
    let p = Project::new(
        SimOptions::default().namespace("staging").namespace("prod"),
        STAGING_PROD,
    );
    p.release("v0.1.0", &m.a);
    p.release("v0.2.0", &m.b);
    p.release("v0.3.0", &m.b);
    // v0.3.0's pods exit at once, again and again: a crash loop.
    p.sim.handle.set_arg_scenario("v0.3.0", Scenario::CrashLoop);

    let first = p.deploy("v0.1.0", "staging", TIMEOUT).ok();
    assert!(
        first.stdout.contains("v0.1.0 verified on staging"),
        "{first}"
    );
    assert_eq!(
        p.history("staging"),
        pairs(&[("started", "v0.1.0"), ("verified", "v0.1.0")])
    );

    // What kubectl would show: the Deployment names the release, its model, who
    // deployed it and where the pods pull it from.
    let a = p.sim.annotations("staging");
    let shown = p.run(["release", "show", "v0.1.0", "--json"]).ok().json();
    assert_eq!(a["predict-buy.dev/release"], "v0.1.0");
    assert_eq!(
        a["predict-buy.dev/model-digest"],
        shown["model_digest"].as_str().unwrap()
    );
    assert_eq!(a["predict-buy.dev/deployed-by"], shown_actor(&p));
    assert_eq!(
        a["predict-buy.dev/registry"],
        format!("file://{}", p.ctx.registry_dir().display())
    );
    assert_eq!(a["kubernetes.io/change-cause"], "predict-buy deploy v0.1.0");
    assert_eq!(p.sim.ready_pod_releases("staging"), ["v0.1.0", "v0.1.0"]);

    let status = p.run(["status", "--env", "staging", "--json"]).ok().json();
    let cluster = &status["cluster"]["deployment"];
    assert_eq!(cluster["release"], "v0.1.0", "{status:#}");
    assert_eq!(cluster["desired"], 2);
    assert_eq!(cluster["ready"], 2);
    assert_eq!(cluster["model_digest"], shown["model_digest"]);
    assert_eq!(status["cluster"]["pods"].as_array().map(Vec::len), Some(2));
    let text = p.run(["status", "--env", "staging"]).ok();
    assert!(
        text.stdout.contains("kubernetes namespace `staging`")
            && text.stdout.contains("cluster      v0.1.0 (2 of 2 ready"),
        "{text}"
    );

    // From here on, a client keeps asking through the Service the whole time.
    let load = Load::start(p.sim.handle.addr(), "staging", &p.golden_input("v0.1.0"));
    poll_until("the load generator's first answers", || {
        proxied_predict(
            p.sim.handle.addr(),
            "staging",
            &p.golden_input("v0.1.0").to_string(),
        )
        .is_ok()
    });

    p.deploy("v0.2.0", "staging", TIMEOUT).ok();
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.2.0"));

    let broken = p.deploy("v0.3.0", "staging", TIMEOUT).code(1);
    assert!(
        broken.stdout.contains("CrashLoopBackOff")
            && broken.stdout.contains("rolled back to v0.2.0"),
        "{broken}"
    );
    assert!(
        broken
            .stderr
            .contains("v0.3.0 on staging was not verified; rolled back to v0.2.0"),
        "{broken}"
    );
    let h = p.history("staging");
    assert_eq!(
        h[h.len() - 3..],
        pairs(&[
            ("started", "v0.3.0"),
            ("failed", "v0.3.0"),
            ("rolled_back", "v0.2.0")
        ])
    );
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.2.0"));
    assert_eq!(p.desired("staging").as_deref(), Some("v0.2.0"));
    poll_until("v0.2.0's two pods and no other to be ready", || {
        p.sim.ready_pod_releases("staging") == ["v0.2.0", "v0.2.0"]
    });

    let back = p
        .run([
            "rollback",
            "--env",
            "staging",
            "--to",
            "v0.1.0",
            "--yes",
            "--timeout",
            TIMEOUT,
        ])
        .ok();
    assert!(back.stdout.contains("v0.1.0 verified on staging"), "{back}");
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.1.0"));
    assert_eq!(
        p.sim.annotations("staging")["predict-buy.dev/release"],
        "v0.1.0"
    );

    let (ok, failures) = load.finish();
    eprintln!(
        "load through the service proxy: {ok} answered, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests through the service proxy failed; first: {}",
        failures.len(),
        ok + failures.len() as u64,
        failures[0]
    );
    assert!(ok >= 10, "the load generator got only {ok} answers");

    // prod takes only what staging verified: v0.3.0 failed there, v0.2.0 did not.
    let refused = p
        .run(["promote", "v0.3.0", "--to", "prod", "--yes"])
        .code(2);
    assert!(refused.stderr.contains("staging"), "{refused}");
    assert!(p.sim.deployment("prod").is_none());
    let promoted = p
        .run([
            "promote",
            "v0.2.0",
            "--to",
            "prod",
            "--yes",
            "--timeout",
            TIMEOUT,
        ])
        .ok();
    assert!(
        promoted.stdout.contains("v0.2.0 verified on prod"),
        "{promoted}"
    );
    assert_eq!(
        p.sim.annotations("prod")["predict-buy.dev/release"],
        "v0.2.0"
    );
    assert_eq!(p.sim.ready_pod_releases("prod"), ["v0.2.0"]);
    assert_eq!(
        p.history("prod"),
        pairs(&[("started", "v0.2.0"), ("verified", "v0.2.0")])
    );
    assert!(
        p.history_messages("prod")[0].contains("promote from staging"),
        "{:?}",
        p.history_messages("prod")
    );
    // staging still runs what the manual rollback left.
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.1.0"));
}

/// The actor the CLI records: `tester` (set by the test context) on this host.
fn shown_actor(p: &Project) -> String {
    let run = p.run(["history", "--env", "staging", "--json"]).ok();
    run.json()[0]["actor"]
        .as_str()
        .expect("an actor")
        .to_string()
}

const STAGING: &str =
    "  staging:\n    target: kubernetes\n    namespace: staging\n    replicas: 1\n";

/// A project with `staging` (one replica) running v0.1.0, and v0.2.0 released.
fn staging_on_v1(options: SimOptions) -> Project {
    let m = models();
    let p = Project::new(options.namespace("staging"), STAGING);
    p.release("v0.1.0", &m.a);
    p.release("v0.2.0", &m.b);
    p.deploy("v0.1.0", "staging", TIMEOUT).ok();
    p
}

/// `drift` reaches the pods of the desired release through the API server's proxy, as
/// verification does, and adds up what they counted.
#[test]
fn drift_asks_every_pod_of_the_release() {
    let p = staging_on_v1(SimOptions::default());
    let body = p.golden_input("v0.1.0").to_string();
    for _ in 0..20 {
        proxied_predict(p.sim.handle.addr(), "staging", &body).expect("a proxied prediction");
    }
    let doc = p.run(["drift", "--env", "staging", "--json"]).ok().json();
    let endpoints = doc["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "one replica: {doc}");
    assert!(
        endpoints[0]["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("pod predict-buy-")),
        "{doc}"
    );
    let model = &doc["models"][0];
    assert_eq!(model["release"], "v0.1.0", "{doc}");
    // The 20 requests above, plus verification's smoke predictions.
    let samples = model["samples"].as_u64().expect("samples");
    assert!(samples >= 20, "{doc}");
    // Fewer than 100 predictions: reported, not judged.
    assert_eq!(model["features"][0]["status"], "insufficient", "{doc}");
}

#[test]
fn a_missing_kubeconfig_is_bad_input_and_changes_nothing() {
    let m = models();
    let p = Project::new(SimOptions::default().namespace("staging"), STAGING);
    p.release("v0.1.0", &m.a);
    let missing = p.ctx.path().join("no-such-kubeconfig");
    let out = p
        .ctx
        .command()
        .env("KUBECONFIG", &missing)
        .args(["deploy", "v0.1.0", "--env", "staging", "--yes"])
        .output()
        .expect("run predict-buy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read the kubeconfig"), "{stderr}");
    assert!(stderr.contains("hint: set KUBECONFIG"), "{stderr}");
    assert!(p.history("staging").is_empty());
    assert!(p.sim.deployment("staging").is_none());
}

#[test]
fn a_missing_namespace_is_named_and_created_when_the_environment_says_so() {
    let m = models();
    let p = Project::new(
        SimOptions::default(),
        "  staging:\n    target: kubernetes\n    namespace: absent\n    replicas: 1\n",
    );
    p.release("v0.1.0", &m.a);
    let run = p.deploy("v0.1.0", "staging", TIMEOUT).code(2);
    assert!(
        run.stderr.contains("namespace `absent` does not exist"),
        "{run}"
    );
    assert!(run.stderr.contains("create_namespace: true"), "{run}");
    assert!(p.sim.handle.object("namespaces", "", "absent").is_none());
    assert!(p.sim.handle.objects("services", "absent").is_empty());
    let h = p.history("staging");
    assert_eq!(h, pairs(&[("started", "v0.1.0"), ("failed", "v0.1.0")]));
    assert!(
        p.history_messages("staging")[1].contains("namespace `absent` does not exist"),
        "{:?}",
        p.history_messages("staging")
    );
    assert_eq!(p.desired("staging"), None);

    p.write_config(
        "  staging:\n    target: kubernetes\n    namespace: absent\n    replicas: 1\n    create_namespace: true\n",
    );
    p.deploy("v0.1.0", "staging", TIMEOUT).ok();
    let ns = p
        .sim
        .handle
        .object("namespaces", "", "absent")
        .expect("created");
    assert_eq!(
        ns["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        APP
    );
    assert_eq!(p.sim.ready_pod_releases("absent"), ["v0.1.0"]);
}

#[test]
fn an_rbac_refusal_names_the_verb_and_resource_and_applies_nothing() {
    let m = models();
    let p = Project::new(SimOptions::default().namespace("staging"), STAGING);
    p.release("v0.1.0", &m.a);
    p.sim
        .handle
        .deny("patch", "deployments.apps", Some("staging"));
    let run = p.deploy("v0.1.0", "staging", TIMEOUT).code(2);
    assert!(
        run.stderr
            .contains("the cluster refused to patch deployments.apps `predict-buy`"),
        "{run}"
    );
    // The API server's own message names who was refused.
    assert!(run.stderr.contains(p.sim.handle.user()), "{run}");
    assert!(run.stderr.contains("hint: grant"), "{run}");
    // Nothing half-applied: not the Deployment, and not the objects applied before it.
    assert!(p.sim.deployment("staging").is_none());
    assert!(p.sim.handle.objects("services", "staging").is_empty());
    assert!(
        p.sim
            .handle
            .objects("poddisruptionbudgets", "staging")
            .is_empty()
    );
    assert_eq!(
        p.history("staging"),
        pairs(&[("started", "v0.1.0"), ("failed", "v0.1.0")])
    );
    assert_eq!(p.desired("staging"), None);
}

#[test]
fn an_image_that_cannot_be_pulled_fails_and_rolls_back() {
    let p = staging_on_v1(SimOptions::default());
    // Without an `image` key, a release runs `predict-buy:<version>`.
    p.sim
        .handle
        .set_image_scenario("predict-buy:0.2.0", Scenario::ErrImagePull);
    let run = p.deploy("v0.2.0", "staging", TIMEOUT).code(1);
    assert!(
        run.stdout.contains("ErrImagePull") || run.stdout.contains("ImagePullBackOff"),
        "{run}"
    );
    assert!(run.stdout.contains("predict-buy:0.2.0"), "{run}");
    assert!(run.stdout.contains("rolled back to v0.1.0"), "{run}");
    let h = p.history("staging");
    assert_eq!(
        h[2..],
        pairs(&[
            ("started", "v0.2.0"),
            ("failed", "v0.2.0"),
            ("rolled_back", "v0.1.0")
        ])
    );
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.1.0"));
    poll_until("only v0.1.0 to run", || {
        p.sim.ready_pod_releases("staging") == ["v0.1.0"]
            && p.sim.handle.objects("pods", "staging").len() == 1
    });
}

#[test]
fn a_stuck_rollout_is_unverified_not_failed_and_rolled_back() {
    let p = staging_on_v1(SimOptions::default().progress_deadline(Duration::from_secs(3)));
    p.sim.handle.set_arg_scenario("v0.2.0", Scenario::Stuck);
    let run = p.deploy("v0.2.0", "staging", TIMEOUT).code(1);
    assert!(run.stdout.contains("ProgressDeadlineExceeded"), "{run}");
    assert!(
        run.stdout.contains("could not be verified on staging"),
        "{run}"
    );
    assert!(run.stdout.contains("rolled back to v0.1.0"), "{run}");
    // The release is not blamed: Kubernetes gave up on the rollout, which says the
    // environment could not be checked, not that the release is bad.
    let h = p.history("staging");
    assert_eq!(
        h[2..],
        pairs(&[
            ("started", "v0.2.0"),
            ("unverified", "v0.2.0"),
            ("rolled_back", "v0.1.0")
        ])
    );
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.1.0"));
}

#[test]
fn a_slow_rollout_beyond_the_timeout_is_rolled_back() {
    let p = staging_on_v1(SimOptions::default());
    p.sim.handle.set_arg_scenario(
        "v0.2.0",
        Scenario::Slow {
            ready_after: Duration::from_secs(600),
        },
    );
    let run = p.deploy("v0.2.0", "staging", "4s").code(1);
    assert!(
        run.stdout
            .contains("the rollout in namespace `staging` did not finish within 4s"),
        "{run}"
    );
    assert!(run.stdout.contains("rolled back to v0.1.0"), "{run}");
    let h = p.history("staging");
    assert_eq!(
        h[2..],
        pairs(&[
            ("started", "v0.2.0"),
            ("unverified", "v0.2.0"),
            ("rolled_back", "v0.1.0")
        ])
    );
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.1.0"));
    assert_eq!(p.desired("staging").as_deref(), Some("v0.1.0"));
}

#[test]
fn a_hand_edited_deployment_is_a_conflict_reported_never_forced() {
    let p = staging_on_v1(SimOptions::default());
    p.sim
        .handle
        .edit_deployment(
            "staging",
            APP,
            "kubectl-edit",
            &json!({"spec": {"replicas": 3}}),
        )
        .expect("the Deployment exists");
    let run = p.deploy("v0.2.0", "staging", TIMEOUT).code(2);
    assert!(
        run.stderr
            .contains("deployments.apps `predict-buy` was changed by another field manager"),
        "{run}"
    );
    assert!(run.stderr.contains("kubectl-edit"), "{run}");
    assert!(run.stderr.contains(".spec.replicas"), "{run}");
    // Never forced: the hand edit stands and the cluster still runs v0.1.0.
    let d = p.sim.deployment("staging").expect("the Deployment");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.1.0"));
    assert_eq!(p.desired("staging").as_deref(), Some("v0.1.0"));
    let h = p.history("staging");
    assert_eq!(
        h[2..],
        pairs(&[("started", "v0.2.0"), ("failed", "v0.2.0")])
    );
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let p = staging_on_v1(SimOptions::default());
    let before = p.history("staging");
    let generation = p.sim.deployment("staging").unwrap()["metadata"]["generation"].clone();
    p.sim.handle.clear_requests();
    let run = p
        .run(["deploy", "v0.2.0", "--env", "staging", "--dry-run", "--yes"])
        .ok();
    assert!(run.stdout.contains("v0.2.0"), "{run}");
    assert!(
        run.stdout.contains("kubernetes namespace `staging`"),
        "{run}"
    );
    assert!(run.stdout.contains("dry run: nothing was changed"), "{run}");
    let writes: Vec<_> = p
        .sim
        .handle
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && !r.query.contains("dryRun=All"))
        .collect();
    assert!(
        writes.is_empty(),
        "a dry run wrote to the cluster: {writes:?}"
    );
    assert_eq!(p.history("staging"), before);
    let d = p.sim.deployment("staging").unwrap();
    assert_eq!(d["metadata"]["generation"], generation);
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.1.0"));
}

#[test]
fn render_prints_the_manifests_and_refuses_a_local_environment() {
    let m = models();
    let p = Project::new(
        SimOptions::default(),
        "  staging:\n    target: kubernetes\n    namespace: staging\n    replicas: 2\n  \
           local:\n    target: local\n    endpoints: [http://127.0.0.1:9]\n",
    );
    p.release("v0.1.0", &m.a);
    let run = p.run(["render", "v0.1.0", "--env", "staging"]).ok();
    // Rendering needs no cluster: the simulator saw nothing.
    assert!(p.sim.handle.requests().is_empty());
    let settings = insta_settings(&p.ctx);
    settings.bind(|| insta::assert_snapshot!("kubernetes_render", run.stdout));

    let local = p.run(["render", "v0.1.0", "--env", "local"]).code(2);
    assert!(
        local
            .stderr
            .contains("environment `local` has target `local`; render draws Kubernetes manifests"),
        "{local}"
    );
}

fn kubectl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PREDICT_BUY_KUBECTL") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

fn kubectl_or_skip(test: &str) -> Option<PathBuf> {
    let found = kubectl();
    if found.is_none() {
        assert!(
            std::env::var("PREDICT_BUY_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "PREDICT_BUY_REQUIRE_KUBECTL=1 but no kubectl: set PREDICT_BUY_KUBECTL or put kubectl on PATH"
        );
        eprintln!("skipping {test}: no kubectl (set PREDICT_BUY_KUBECTL or put kubectl on PATH)");
    }
    found
}

fn run_kubectl(bin: &Path, p: &Project, args: &[&str]) -> Run {
    let out = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(&p.sim.kubeconfig)
        .arg("--cache-dir")
        .arg(p.ctx.path().join("kube-cache"))
        .args(args)
        .output()
        .expect("run kubectl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn kubectl_tells_the_same_truth_as_predict_buy() {
    let Some(bin) = kubectl_or_skip("kubectl_tells_the_same_truth_as_predict_buy") else {
        return;
    };
    let m = models();
    let p = Project::new(
        SimOptions::default()
            .namespace("staging")
            .namespace("canary")
            .progress_deadline(Duration::from_secs(3)),
        "  staging:\n    target: kubernetes\n    namespace: staging\n    replicas: 1\n  \
           canary:\n    target: kubernetes\n    namespace: canary\n    replicas: 1\n",
    );
    p.release("v0.1.0", &m.a);
    p.release("v0.2.0", &m.b);
    p.release("v0.3.0", &m.b);
    p.sim.handle.set_arg_scenario("v0.3.0", Scenario::CrashLoop);

    p.deploy("v0.1.0", "staging", TIMEOUT).ok();
    p.deploy("v0.2.0", "staging", TIMEOUT).ok();
    let yaml = run_kubectl(&bin, &p, &["get", "deploy", "-n", "staging", "-o", "yaml"]);
    assert_eq!(yaml.code, 0, "{yaml}");
    for line in [
        "predict-buy.dev/release: v0.2.0",
        "predict-buy.dev/deployed-by: ",
        "predict-buy.dev/model-digest: sha256:",
        "predict-buy.dev/registry: file://",
        "kubernetes.io/change-cause: predict-buy deploy v0.2.0",
    ] {
        assert!(yaml.stdout.contains(line), "no `{line}` in\n{yaml}");
    }
    let healthy = run_kubectl(
        &bin,
        &p,
        &[
            "rollout",
            "status",
            "deploy/predict-buy",
            "-n",
            "staging",
            "--timeout=60s",
        ],
    );
    assert_eq!(healthy.code, 0, "{healthy}");
    assert!(
        healthy.stdout.contains("successfully rolled out"),
        "{healthy}"
    );
    let history = run_kubectl(
        &bin,
        &p,
        &["rollout", "history", "deploy/predict-buy", "-n", "staging"],
    );
    assert_eq!(history.code, 0, "{history}");
    let revisions: Vec<&str> = history
        .stdout
        .lines()
        .filter(|l| l.contains("predict-buy deploy"))
        .collect();
    assert_eq!(revisions.len(), 2, "{history}");
    assert!(revisions[0].starts_with('1') && revisions[0].ends_with("predict-buy deploy v0.1.0"));
    assert!(revisions[1].starts_with('2') && revisions[1].ends_with("predict-buy deploy v0.2.0"));

    // A crash-looping release with nothing verified to return to stays applied (the
    // Deployment is left as it is), so kubectl judges the same rollout we judged.
    let broken = p.deploy("v0.3.0", "canary", TIMEOUT).code(1);
    assert!(broken.stdout.contains("CrashLoopBackOff"), "{broken}");
    assert_eq!(p.sim.template_release("canary").as_deref(), Some("v0.3.0"));
    let crashing = run_kubectl(
        &bin,
        &p,
        &[
            "rollout",
            "status",
            "deploy/predict-buy",
            "-n",
            "canary",
            "--timeout=60s",
        ],
    );
    assert_ne!(crashing.code, 0, "{crashing}");
    assert!(
        crashing.stderr.contains("exceeded its progress deadline"),
        "{crashing}"
    );
}

/// The same journey on a REAL cluster, when one is configured; skipped otherwise.
///
/// - `PREDICT_BUY_TEST_KUBECONFIG`: a kubeconfig whose current context may create a
///   namespace and deploy into it;
/// - `PREDICT_BUY_TEST_IMAGE`: a predict-buy image the cluster can pull;
/// - `PREDICT_BUY_TEST_REGISTRY`: an `s3://` registry the pods can read (credentials
///   as usual, `AWS_*`, for this process; for the pods through the cluster's own
///   means, e.g. the service account named by `PREDICT_BUY_TEST_SERVICE_ACCOUNT`).
#[test]
fn real_cluster_deploy_verify_and_roll_back() {
    let Some(kubeconfig) = std::env::var_os("PREDICT_BUY_TEST_KUBECONFIG") else {
        eprintln!(
            "skipping real_cluster_deploy_verify_and_roll_back: PREDICT_BUY_TEST_KUBECONFIG is not set (no cluster here; the simulator tests above stand in)"
        );
        return;
    };
    let need = |key: &str| {
        std::env::var(key)
            .unwrap_or_else(|_| panic!("PREDICT_BUY_TEST_KUBECONFIG is set, so {key} must be too"))
    };
    let image = need("PREDICT_BUY_TEST_IMAGE");
    let registry = need("PREDICT_BUY_TEST_REGISTRY");
    let service_account = std::env::var("PREDICT_BUY_TEST_SERVICE_ACCOUNT")
        .map(|sa| format!("    service_account: {sa}\n"))
        .unwrap_or_default();
    // Tags are immutable in a shared registry: make them unique to this run.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let (v1, v2) = (format!("v0.{stamp}.1"), format!("v0.{stamp}.2"));
    let namespace = format!("predict-buy-e2e-{stamp}");

    let mut ctx = TestContext::new();
    ctx.env(
        "KUBECONFIG",
        &PathBuf::from(kubeconfig).display().to_string(),
    );
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        format!(
            "registry: {registry}\nrequire_git_tag: false\nenvironments:\n  \
             e2e:\n    target: kubernetes\n    namespace: {namespace}\n    create_namespace: true\n    \
             replicas: 1\n    image: {image}\n{service_account}"
        ),
    )
    .expect("write predict-buy.yaml");
    let m = models();
    for (tag, model) in [(&v1, &m.a), (&v2, &m.b)] {
        ctx.run([
            OsStr::new("release"),
            OsStr::new("create"),
            OsStr::new(tag),
            OsStr::new("--model"),
            model.as_os_str(),
        ])
        .ok();
    }
    let deploy = |tag: &str| ctx.run(["deploy", tag, "--env", "e2e", "--yes", "--timeout", "300s"]);
    deploy(&v1).ok();
    deploy(&v2).ok();
    let status = ctx.run(["status", "--env", "e2e", "--json"]).ok().json();
    assert_eq!(status["cluster"]["deployment"]["release"], v2.as_str());
    ctx.run(["rollback", "--env", "e2e", "--yes", "--timeout", "300s"])
        .ok();
    let status = ctx.run(["status", "--env", "e2e", "--json"]).ok().json();
    assert_eq!(status["cluster"]["deployment"]["release"], v1.as_str());
    assert_eq!(status["cluster"]["deployment"]["ready"], 1);
    eprintln!("real cluster: namespace {namespace} left for inspection; delete it when done");
}

/// Shadow on the simulator: the pods (real `predict-buy serve --release … --env
/// staging` processes) load the candidate from the registry's record, and `shadow
/// report` reaches every pod through the API server's pod proxy.
#[test]
fn a_shadow_runs_on_pods_and_is_reported_through_the_api_proxy() {
    let p = staging_on_v1(SimOptions::default());
    p.run([
        "shadow",
        "start",
        "v0.2.0",
        "--env",
        "staging",
        "--timeout",
        TIMEOUT,
    ])
    .ok();
    let body = p.golden_input("v0.1.0").to_string();
    for _ in 0..12 {
        proxied_predict(p.sim.handle.addr(), "staging", &body).unwrap();
    }
    let mut report = Value::Null;
    poll_until("12 instances compared on the pod", || {
        report = p
            .run(["shadow", "report", "--env", "staging", "--json"])
            .ok()
            .json();
        report["compared"] == 12
    });
    let endpoints = report["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{report}");
    assert!(
        endpoints[0].as_str().unwrap().starts_with("pod "),
        "{report}"
    );
    assert_eq!(report["primary"]["version"], "v0.1.0");
    assert_eq!(report["shadow"]["version"], "v0.2.0");
    assert_eq!(report["primary"]["requests"], 12);
    p.run(["shadow", "stop", "--env", "staging"]).ok();
    let history = p.history("staging");
    assert_eq!(
        history[history.len() - 2..],
        pairs(&[("shadow_started", "v0.2.0"), ("shadow_stopped", "v0.2.0")])
    );
    // The serving release never changed.
    assert_eq!(p.desired("staging").as_deref(), Some("v0.1.0"));
    assert_eq!(p.sim.template_release("staging").as_deref(), Some("v0.1.0"));
}
