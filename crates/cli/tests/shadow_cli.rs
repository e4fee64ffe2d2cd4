//! `predict-buy shadow start|report|stop` through the real binary, against a file://
//! registry and two real `predict-buy serve` processes following `nonprod`.

mod common;

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use common::{PATIENCE, Server, TestContext, models, poll_for};
use predict_buy_model::Model;
use predict_buy_registry::{Registry, RegistryUrl, ReleaseRecord, ReleaseTag};
use serde_json::{Value, json};

fn serve(ctx: &TestContext) -> Server {
    ctx.serve_env("nonprod", "100ms")
}

/// One HTTP/1.1 request; status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn row(i: usize) -> Value {
    json!({"Gender": if i.is_multiple_of(2) {"Male"} else {"Female"}, "Age": 20 + (i * 7) % 60,
        "HasDrivingLicense": 1, "RegionID": (i * 13 % 52) as f64, "Switch": i % 3 % 2,
        "PastAccident": if i.is_multiple_of(3) {"No"} else {"Yes"}, "AnnualPremium": 500 + i * 97})
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn shadow_start_report_stop_against_two_servers() {
    let ctx = TestContext::new();
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
    // A release whose artifact is not a model: recorded in the registry directly, as
    // `release create` would refuse it.
    let registry = Registry::open(&RegistryUrl::File {
        root: ctx.registry_dir(),
    })
    .unwrap();
    rt().block_on(async {
        let pushed = registry
            .push_bytes(b"not a model".to_vec().into())
            .await
            .unwrap();
        registry
            .create_release(&ReleaseRecord {
                tag: ReleaseTag::parse("v0.9.0").unwrap(),
                model_digest: pushed.digest,
                image: None,
                git_commit: None,
                notes: String::new(),
                created_at: jiff::Timestamp::now(),
                created_by: "test".into(),
                metrics: Value::Null,
                golden: Vec::new(),
                training: None,
            })
            .await
            .unwrap();
    });
    let servers = [serve(&ctx), serve(&ctx)];
    let endpoints: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.addr()))
        .collect();
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        format!(
            "registry: file://.predict-buy/registry\nrequire_git_tag: false\nenvironments:\n  nonprod:\n    branch: develop\n    target: local\n    endpoints: [{}]\n",
            endpoints.join(", ")
        ),
    )
    .unwrap();

    // No serving release yet: nothing to compare with.
    let run = ctx
        .run(["shadow", "start", "v0.2.0", "--env", "nonprod"])
        .code(2);
    assert!(run.stderr.contains("serves no release"), "{run}");
    ctx.run(["deploy", "v0.1.0", "--env", "nonprod", "--yes"])
        .ok();
    let history_len = |ctx: &TestContext| {
        ctx.run(["history", "--env", "nonprod", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let before = history_len(&ctx);

    // A candidate that does not load is refused, and nothing changes.
    let run = ctx
        .run(["shadow", "start", "v0.9.0", "--env", "nonprod"])
        .code(2);
    assert!(
        run.stderr.contains("v0.9.0") && run.stderr.contains("does not load"),
        "{run}"
    );
    assert_eq!(history_len(&ctx), before);
    assert!(
        rt().block_on(
            registry.candidate(&predict_buy_registry::EnvName::parse("nonprod").unwrap())
        )
        .unwrap()
        .is_none()
    );
    ctx.run(["shadow", "report", "--env", "nonprod"]).code(2);

    ctx.run(["shadow", "start", "v0.2.0", "--env", "nonprod"])
        .ok();
    // One shadow at a time.
    let run = ctx
        .run(["shadow", "start", "v0.1.0", "--env", "nonprod"])
        .code(2);
    assert!(run.stderr.contains("shadow stop"), "{run}");

    let (a, b) = (
        Model::from_bytes(&std::fs::read(&m.a).unwrap()).unwrap(),
        Model::from_bytes(&std::fs::read(&m.b).unwrap()).unwrap(),
    );
    let mut confusion = [[0u64; 2]; 2];
    let mut positives = [0u64; 2];
    let n = 120;
    for i in 0..n {
        let body = row(i);
        let (status, text) = http(servers[i % 2].addr(), "POST", "/predict", &body.to_string());
        assert_eq!(status, 200, "{text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            answer["model_version"], "v0.1.0",
            "only the serving release answers"
        );
        let record = body.as_object().unwrap();
        let (pa, pb) = (
            a.predict_json(record).unwrap(),
            b.predict_json(record).unwrap(),
        );
        assert_eq!(answer["probability"], pa.probability);
        confusion[usize::from(pa.predicted_class)][usize::from(pb.predicted_class)] += 1;
        positives[0] += u64::from(pa.predicted_class);
        positives[1] += u64::from(pb.predicted_class);
    }
    let report = poll_for("every instance compared", || {
        let r = ctx
            .run(["shadow", "report", "--env", "nonprod", "--json"])
            .ok()
            .json();
        (r["compared"] == n).then_some(r)
    });
    assert_eq!(report["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(report["confusion"], json!(confusion));
    let agreed = (confusion[0][0] + confusion[1][1]) as f64 / n as f64;
    assert!((report["agreement"].as_f64().unwrap() - agreed).abs() < 1e-12);
    assert_eq!(report["primary"]["version"], "v0.1.0");
    assert_eq!(report["shadow"]["version"], "v0.2.0");
    assert_eq!(report["primary"]["requests"], n);
    let share = |p: u64| p as f64 / n as f64;
    assert!(
        (report["primary"]["positive_share"].as_f64().unwrap() - share(positives[0])).abs() < 1e-12
    );
    assert!(
        (report["shadow"]["positive_share"].as_f64().unwrap() - share(positives[1])).abs() < 1e-12
    );
    assert!(report["primary"]["latency_p99_us"].as_f64().unwrap() > 0.0);
    assert!(report["mean_abs_delta"].as_f64().unwrap() > 0.0);
    let text = ctx.run(["shadow", "report", "--env", "nonprod"]).ok();
    assert!(
        text.stdout
            .contains(&format!("requests compared:  {n} instances")),
        "{text}"
    );

    let stop = ctx.run(["shadow", "stop", "--env", "nonprod"]).ok();
    assert!(
        stop.stderr
            .contains(&format!("{n} compared over 2 endpoint(s)")),
        "{stop}"
    );
    let history = ctx
        .run(["history", "--env", "nonprod", "--json"])
        .ok()
        .json();
    let last: Vec<(&str, &str)> = history.as_array().unwrap()[before..]
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap(),
                e["release"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        last,
        [("shadow_started", "v0.2.0"), ("shadow_stopped", "v0.2.0")]
    );
    let message = history.as_array().unwrap().last().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(&format!("{n} compared")), "{message}");
    // The servers drop the shadow.
    for s in &servers {
        poll_for("the shadow to go", || {
            let (_, t) = http(s.addr(), "GET", "/traffic", "");
            let t: Value = serde_json::from_str(&t).unwrap();
            t["shadow"].is_null().then_some(())
        });
    }
    let run = ctx.run(["shadow", "stop", "--env", "nonprod"]).code(2);
    assert!(run.stderr.contains("no shadow runs"), "{run}");
}
