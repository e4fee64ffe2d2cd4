//! The deploy benchmark behind `bench/deploy/run.sh`: two real `predict-buy serve`
//! processes follow `nonprod` while a load generator hits both; the environment goes
//! v0.1.0 → v0.2.0 → v0.1.0 (deploy, then rollback) `--rounds` times. Prints each
//! transition's verification time, their median and worst, and the failed-request
//! count.
//!
//! ```text
//! cargo run --release -p predict-buy-deploy --example deploy_bench -- \
//!     --bin target/release/predict-buy --registry DIR [--rounds 10] \
//!     [--poll-interval 200ms] [--no-nudge]
//! ```
//! The registry must hold releases v0.1.0 and v0.2.0 (run.sh makes them).

#[path = "common/loadgen.rs"]
mod loadgen;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use predict_buy_deploy::{Deployer, Identity, Kind, LoadedConfig, Verifier, target_for};
use predict_buy_registry::{Registry, RegistryUrl, ReleaseTag};

use loadgen::LoadGenerator;

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let bin = PathBuf::from(arg(&args, "--bin").ok_or("--bin PATH is required")?);
    let registry_dir = PathBuf::from(arg(&args, "--registry").ok_or("--registry DIR is required")?);
    let rounds: usize = arg(&args, "--rounds").map_or(Ok(10), |r| r.parse())?;
    let poll = arg(&args, "--poll-interval").unwrap_or_else(|| "200ms".into());
    let nudge = !args.iter().any(|a| a == "--no-nudge");
    let token = "bench-token";

    let ports: Vec<u16> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().unwrap().port()))
        .collect::<Result<_, _>>()?;
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let servers = Servers(
        ports
            .iter()
            .map(|p| start_server(&bin, &registry_dir, *p, &poll, token))
            .collect::<Result<_, _>>()?,
    );
    let config = LoadedConfig::parse(
        &format!(
            "require_git_tag: false\nenvironments:\n  nonprod:\n    target: local\n    endpoints: [{}]\n",
            endpoints.join(", ")
        ),
        Path::new("bench/predict-buy.yaml"),
    )?;
    let env = config.environment("nonprod")?;
    let registry = Arc::new(Registry::open(&RegistryUrl::File {
        root: registry_dir.clone(),
    })?);
    let verifier =
        Verifier::new(Duration::from_secs(10))?.with_admin_token(nudge.then(|| token.to_string()));
    let deployer = Deployer::new(
        Arc::clone(&registry),
        env.clone(),
        target_for(&env)?,
        verifier,
        Identity::current(),
    );
    let v1 = ReleaseTag::parse("v0.1.0")?;
    let v2 = ReleaseTag::parse("v0.2.0")?;
    let transition =
        async |tag: &ReleaseTag, kind: Kind| -> Result<f64, Box<dyn std::error::Error>> {
            let release = deployer.validate(tag).await?;
            let plan = deployer.plan(release, kind).await?;
            let report = deployer.execute(&plan).await?;
            if !report.is_verified() {
                return Err(format!("{tag} was not verified: {:?}", report.failure()).into());
            }
            Ok(report.verify_ms().unwrap_or_default())
        };
    let first = transition(&v1, Kind::Deploy).await?;
    println!("initial deploy v0.1.0 (servers not ready yet): {first:.1} ms");

    let golden = registry.get_release(&v1).await?.golden[0].input.clone();
    let urls: Vec<predict_buy_deploy::Url> = endpoints
        .iter()
        .map(|e| predict_buy_deploy::Url::parse(&format!("{e}/")))
        .collect::<Result<_, _>>()?;
    let load = LoadGenerator::start(&urls, golden, 2, Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let up = transition(&v2, Kind::Deploy).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let down = transition(&v1, Kind::Rollback).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        println!("round {round:>2}: deploy v0.2.0 {up:>7.1} ms · rollback v0.1.0 {down:>7.1} ms");
        ups.push(up);
        downs.push(down);
    }
    let stats = load.stop().await;
    drop(servers);
    let worst = ups.iter().chain(&downs).copied().fold(0.0, f64::max);
    println!(
        "\nserver poll interval {poll}, reload nudge {}",
        if nudge {
            "on (POST /admin/reload)"
        } else {
            "off"
        }
    );
    println!(
        "deploy v0.2.0   median {:.1} ms over {rounds}",
        median(&mut ups)
    );
    println!(
        "rollback v0.1.0 median {:.1} ms over {rounds}",
        median(&mut downs)
    );
    println!("worst transition {worst:.1} ms");
    println!(
        "requests: {} ok, {} failed {:?}",
        stats.ok, stats.failed, stats.by_version
    );
    for f in &stats.failures {
        println!("  failure: {f}");
    }
    if stats.failed > 0 || worst >= 2000.0 {
        return Err("target missed: every transition < 2 s with zero failed requests".into());
    }
    Ok(())
}

fn start_server(
    bin: &Path,
    registry: &Path,
    port: u16,
    poll: &str,
    token: &str,
) -> std::io::Result<Child> {
    Command::new(bin)
        .args(["serve", "--registry"])
        .arg(registry)
        .args(["--env", "nonprod", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--poll-interval", poll])
        .env("PREDICT_BUY_ADMIN_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}
