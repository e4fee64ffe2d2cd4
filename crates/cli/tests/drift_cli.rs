//! `predict-buy drift --env E` against real `predict-buy serve` processes: their
//! histograms are merged by count, judged, and reported in text and JSON.

mod common;

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, TestContext, models};
use predict_buy_data::synth::{Generator, Row};
use serde_json::{Value, json};

/// Nothing listens here (ports under 1024 are privileged; no test server gets one).
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

/// A `predict-buy serve --model …` process on an ephemeral port, killed on drop.
fn serve(ctx: &TestContext) -> Server {
    ctx.spawn_server([OsStr::new("--model"), models().a.as_os_str()])
}

/// A POST over a fresh connection; the status and body.
fn post(addr: &str, path: &str, body: &Value) -> (u16, String) {
    let body = serde_json::to_vec(body).unwrap();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn request(row: &Row) -> Value {
    json!({
        "Gender": row.male.map(|m| if m { "Male" } else { "Female" }),
        "Age": row.age,
        "HasDrivingLicense": row.licence.map(u8::from),
        "RegionID": row.region,
        "Switch": row.switch.map(u8::from),
        "PastAccident": row.past_accident.map(|p| if p { "Yes" } else { "No" }),
        "AnnualPremium": row.premium,
    })
}

/// Sends `n` generated rows to `addr` in batches, each changed by `shift`.
fn send(addr: &str, seed: u64, n: usize, shift: impl Fn(&mut Row)) {
    let mut generator = Generator::new(seed);
    let rows: Vec<Value> = (0..n)
        .map(|_| {
            let mut row = generator.row();
            shift(&mut row);
            request(&row)
        })
        .collect();
    for chunk in rows.chunks(250) {
        let (status, body) = post(addr, "/predict/batch", &json!({ "instances": chunk }));
        assert_eq!(status, 200, "{body}");
    }
}

/// A project whose `nonprod` lists `endpoints`, with a registry (holding a release)
/// for `open_project` to find.
fn project(endpoints: &[String]) -> TestContext {
    let ctx = TestContext::new();
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        format!(
            "registry: file://.predict-buy/registry\n\
             require_git_tag: false\n\
             environments:\n  nonprod:\n    branch: develop\n    target: local\n    endpoints: [{}]\n",
            endpoints.join(", ")
        ),
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
    ctx
}

fn feature<'a>(model: &'a Value, name: &str) -> &'a Value {
    model["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {model}"))
}

#[test]
fn two_servers_are_merged_by_count_and_judged() {
    let scratch = TestContext::new();
    let (a, b) = (serve(&scratch), serve(&scratch));
    // One server sees customers twenty years older than training's; the other sees
    // training's own mix. Together, two thirds of the ages moved: drift.
    send(a.addr(), 11, 1_000, |r| {
        r.age = r.age.map(|x| (x + 20).min(85))
    });
    send(b.addr(), 12, 500, |_| {});
    let endpoints = [
        a.endpoint.clone(),
        b.endpoint.clone(),
        DEAD_ENDPOINT.to_string(),
    ];
    let ctx = project(&endpoints);

    let run = ctx.run(["drift", "--env", "nonprod", "--json"]).ok();
    assert!(
        run.stderr.contains("127.0.0.1:9") && run.stderr.contains("did not answer"),
        "the silent endpoint is named: {run}"
    );
    let doc = run.json();
    assert_eq!(doc["environment"], "nonprod");
    let answers = doc["endpoints"].as_array().unwrap();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0]["samples"], 1_000);
    assert!(answers[2]["error"].is_string(), "{doc}");
    let models = doc["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "one model on both servers: {doc}");
    let model = &models[0];
    assert_eq!(model["samples"], 1_500);
    assert_eq!(model["endpoints"].as_array().unwrap().len(), 2);

    let age = feature(model, "Age");
    assert_eq!(age["status"], "drifted", "{age}");
    assert!(age["psi"].as_f64().unwrap() > 0.25);
    let moved = age["moved_most"].as_array().unwrap();
    assert!(!moved.is_empty(), "{age}");
    // The top moved bin is an old-age band that gained customers, or a young one
    // that lost them.
    let top = &moved[0];
    assert_ne!(top["live_share"], top["reference_share"]);
    // The merged live counts are the sum of both servers'.
    let live: u64 = age["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["live_count"].as_u64().unwrap())
        .sum();
    assert_eq!(live, 1_500);
    // The CLI's models follow the seed config's preset: Switch and HasDrivingLicense
    // are not among their fields.
    let names: Vec<&str> = model["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Gender", "Age", "RegionID", "PastAccident", "AnnualPremium"]
    );
    for name in names.iter().filter(|n| **n != "Age") {
        let f = feature(model, name);
        assert_eq!(f["status"], "stable", "{name}: {f}");
        assert!(f["psi"].as_f64().unwrap() < 0.1, "{name}: {f}");
    }

    let text = ctx.run(["drift", "--env", "nonprod"]).ok();
    let age_line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("Age "))
        .unwrap_or_else(|| panic!("no Age row\n{text}"));
    assert!(
        age_line.contains("drifted") && age_line.contains("→"),
        "{age_line}"
    );
    assert!(text.stdout.contains("2 of 3 servers answered"), "{text}");
    assert!(text.stdout.contains("1500 predictions"), "{text}");
}

#[test]
fn no_server_answering_fails_and_names_them() {
    let ctx = project(&[DEAD_ENDPOINT.to_string()]);
    let run = ctx.run(["drift", "--env", "nonprod"]).code(1);
    assert!(
        run.stderr
            .contains("no server of environment `nonprod` answered")
            && run.stderr.contains("http://127.0.0.1:9"),
        "{run}"
    );
}

#[test]
fn bad_input_exits_2() {
    let ctx = project(&[DEAD_ENDPOINT.to_string()]);
    let run = ctx.run(["drift", "--env", "nowhere"]).code(2);
    assert!(run.stderr.contains("nowhere"), "{run}");
    let run = ctx
        .run(["drift", "--env", "nonprod", "--timeout", "soon"])
        .code(2);
    assert!(run.stderr.contains("--timeout"), "{run}");
}
