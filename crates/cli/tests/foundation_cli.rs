//! The CLI's foundation through the binary: exit codes and hints for bad input, a
//! closed stdout, `predict --keep`, and quickstart's server lifecycle (signals,
//! `--no-serve`, `--port` on a re-run, `--json`, the actor it records).

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestContext, free_port, models, port_answers};

fn write(ctx: &TestContext, name: &str, text: &str) -> std::path::PathBuf {
    let p = ctx.path().join(name);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// Polls `cond` until it holds or `deadline` passes; generous, for a loaded machine.
fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let ctx = TestContext::new();
    ctx.run([
        "data", "synth", "--rows", "20000", "--seed", "3", "--out", "data",
    ])
    .ok();
    let model = models().a.display().to_string();
    for args in [
        vec!["predict", "--model", &model, "--input", "data/train.csv"],
        vec!["data", "synth", "--rows", "50", "--out", "more", "--json"],
    ] {
        let mut child = ctx
            .command()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // No reader from the start: every write the command makes hits a closed pipe.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[test]
fn predict_keeps_the_columns_it_is_asked_to() {
    let ctx = TestContext::new();
    ctx.run([
        "data", "synth", "--rows", "300", "--seed", "5", "--out", "d",
    ])
    .ok();
    let model = models().a.display().to_string();
    let input = std::fs::read_to_string(ctx.path().join("d/test.csv")).unwrap();
    let ids: Vec<&str> = input
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let run = ctx
        .run([
            "predict",
            "--model",
            &model,
            "--input",
            "d/test.csv",
            "--keep",
            "id,Gender",
        ])
        .ok();
    let mut lines = run.stdout.lines();
    assert_eq!(lines.next(), Some("id,Gender,predicted_class,probability"));
    let got: Vec<&str> = lines.map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(got, ids);
    // The same with the flag repeated.
    let again = ctx
        .run([
            "predict",
            "--model",
            &model,
            "--input",
            "d/test.csv",
            "--keep",
            "id",
            "--keep",
            "Gender",
        ])
        .ok();
    assert_eq!(again.stdout, run.stdout);

    let missing = ctx
        .run([
            "predict",
            "--model",
            &model,
            "--input",
            "d/test.csv",
            "--keep",
            "customer",
        ])
        .code(2);
    assert!(
        missing.stderr.contains("--keep `customer`") && missing.stderr.contains("d/test.csv"),
        "{missing}"
    );

    write(
        &ctx,
        "one.json",
        r#"[{"id": 7, "Gender": "Male", "Age": 44, "HasDrivingLicense": 1, "RegionID": 28,
            "Switch": 0, "PastAccident": "Yes", "AnnualPremium": "£1,200.00"}]"#,
    );
    let json = ctx
        .run([
            "predict", "--model", &model, "--input", "one.json", "--keep", "id",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v[0]["id"], 7);
    assert!(v[0]["probability"].as_f64().is_some(), "{v}");
}

#[test]
fn empty_json_inputs_get_json_messages() {
    let ctx = TestContext::new();
    let model = models().a.display().to_string();
    write(&ctx, "empty.json", "  \n");
    write(&ctx, "none.json", "[]");
    let run = ctx
        .run(["predict", "--model", &model, "--input", "empty.json"])
        .code(2);
    assert!(
        run.stderr
            .contains("empty.json is empty: expected a JSON object or an array of JSON objects"),
        "{run}"
    );
    let run = ctx
        .run(["predict", "--model", &model, "--input", "none.json"])
        .code(2);
    assert!(run.stderr.contains("empty JSON array"), "{run}");
}

#[test]
fn a_missing_config_file_is_exit_2_in_every_command() {
    let ctx = TestContext::new();
    for args in [
        vec!["train", "--config", "nope.yml"],
        vec![
            "deploy",
            "v1.0.0",
            "--env",
            "nonprod",
            "--config",
            "nope.yaml",
            "--yes",
        ],
        vec!["status", "--env", "nonprod", "--config", "nope.yaml"],
        vec!["history", "--env", "nonprod", "--config", "nope.yaml"],
        vec![
            "rollback",
            "--env",
            "nonprod",
            "--config",
            "nope.yaml",
            "--yes",
        ],
    ] {
        let run = ctx.run(&args).code(2);
        assert!(run.stderr.contains("nope.y"), "{args:?}\n{run}");
    }
    // No config anywhere: the same code, and a way forward.
    let run = ctx.run(["status", "--env", "nonprod"]).code(2);
    assert!(run.stderr.contains("predict-buy quickstart"), "{run}");
}

#[test]
fn a_bare_train_without_data_hints_at_synth() {
    let ctx = TestContext::new();
    let run = ctx.run(["train"]).code(2);
    assert!(run.stderr.contains("data/train.csv"), "{run}");
    assert!(
        run.stderr
            .contains("hint: make synthetic data with `predict-buy data synth --out data`"),
        "{run}"
    );
}

#[test]
fn zero_durations_are_refused_with_the_flag_named() {
    let ctx = TestContext::new();
    let run = ctx
        .run(["serve", "--model", "m.pbm", "--timeout", "0s"])
        .code(2);
    assert!(run.stderr.contains("must be more than zero"), "{run}");
}

fn quickstart_json(run: &common::Run) -> serde_json::Value {
    let v = run.json();
    assert_eq!(v["release"], "v0.1.0", "{run}");
    v
}

#[test]
fn quickstart_no_serve_reruns_on_another_port_and_records_the_actor() {
    let mut ctx = TestContext::new();
    let first = free_port();
    ctx.env("PREDICT_BUY_ACTOR", "ci-person");
    let run = ctx
        .run([
            "quickstart",
            "--rows",
            "3000",
            "--no-serve",
            "--json",
            "--port",
            &first.to_string(),
        ])
        .ok();
    let v = quickstart_json(&run);
    assert_eq!(v["serving"], false);
    assert_eq!(v["config"], "created");
    assert_eq!(v["endpoint"], format!("http://127.0.0.1:{first}/"));
    assert!(!port_answers(first), "the server still listens on {first}");

    // A re-run with another port moves the environment there, in text mode.
    let second = free_port();
    let mut rerun = ctx.command();
    rerun
        .args(["quickstart", "--no-serve", "--port", &second.to_string()])
        .env_remove("USER")
        .env_remove("PREDICT_BUY_ACTOR");
    let out = rerun.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("at http://127.0.0.1:{second}/")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("curl"),
        "no curl line for a stopped server:\n{stdout}"
    );
    assert!(
        stdout.contains("the server is stopped (--no-serve)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("on port {second} (was {first})")),
        "{stderr}"
    );
    assert!(!port_answers(second));

    // History: the explicit actor, then (no USER) the account name of the uid.
    let history = ctx
        .run(["history", "--env", "nonprod", "--json"])
        .ok()
        .json();
    let actors: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    let account = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let account = String::from_utf8(account.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(actors.first(), Some(&"ci-person"), "{history}");
    assert_eq!(actors.last(), Some(&account.as_str()), "{history}");

    // A config quickstart did not write is not rewritten.
    let config = ctx.path().join("predict-buy.yaml");
    let edited = std::fs::read_to_string(&config).unwrap() + "# mine\n";
    std::fs::write(&config, edited).unwrap();
    let third = free_port();
    let run = ctx
        .run(["quickstart", "--no-serve", "--port", &third.to_string()])
        .code(2);
    assert!(
        run.stderr.contains("was not written by quickstart"),
        "{run}"
    );
}

#[cfg(unix)]
#[test]
fn quickstart_stops_its_server_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let ctx = TestContext::new();
        let port = free_port();
        let mut child = ctx
            .command()
            .args(["quickstart", "--rows", "3000", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Serving once it prints how to try it.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        while !seen.contains("try it") {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "quickstart ended early:\n{seen}"
            );
            seen.push_str(&line);
        }
        assert!(port_answers(port), "no server on {port}:\n{seen}");
        let killed = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        let expected = if signal == "TERM" { 143 } else { 130 };
        assert_eq!(status.code(), Some(expected), "SIG{signal}");
        // The server is gone with it: nothing listens on its port any more.
        wait_for("the port to close", Duration::from_secs(5), || {
            !port_answers(port)
        });
    }
}

/// A signal while the deploy step runs (the server started, quickstart busy on another
/// thread) stops the server too.
#[cfg(unix)]
#[test]
fn quickstart_stops_its_server_on_a_signal_mid_deploy() {
    let ctx = TestContext::new();
    let port = free_port();
    let mut child = ctx
        .command()
        .args(["quickstart", "--rows", "3000", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("[6/6]") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "quickstart ended early:\n{seen}"
        );
        seen.push_str(&line);
    }
    // The server was started in step 5; wait until it listens, so it is there to stop.
    wait_for("the server to listen", Duration::from_secs(60), || {
        port_answers(port)
    });
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Keep draining stderr so the child never blocks on a full pipe.
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).ok();
        rest
    });
    let status = child.wait().unwrap();
    // Checked before the stderr reader is joined: an orphaned server would hold
    // stderr open, and the test must fail, not hang.
    assert!(!port_answers(port), "the server outlived quickstart");
    let rest = rest.join().unwrap();
    assert_eq!(status.code(), Some(143), "{seen}{rest}");
    assert!(rest.contains("stopped by SIGTERM"), "{seen}{rest}");
}
