//! `drift --env E`: asks every server of an environment for its live histograms
//! (`GET /drift`), adds up their counts per model, and reports each input field's PSI
//! against the training data, flagged stable / watch / drifted, with the bins that
//! moved most.
//!
//! Counts, not PSI values, are merged: the PSI of a sum is not the mean of PSIs, and
//! a server that saw ten requests must not weigh as much as one that saw ten thousand.
//! It is a report: drift exits 0; only an environment where no server answers fails.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use predict_buy_api::{BinKind, DriftReport, FeatureDrift};
use predict_buy_deploy::TargetKind;
use predict_buy_deploy::kubernetes::Cluster;
use serde::Serialize;

use crate::commands::deploy::{ProjectArgs, deploy_error, open_project};
use crate::{CliError, Outcome};

#[derive(Args)]
pub struct DriftArgs {
    /// Environment (default: the one following the current git branch).
    #[arg(long)]
    pub env: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for each server: `5s`.
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    #[command(flatten)]
    pub project: ProjectArgs,
}

/// What one server said, or why it said nothing.
#[derive(Debug, Serialize)]
struct Answer {
    endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    samples: Option<u64>,
    #[serde(skip)]
    report: Option<DriftReport>,
}

impl Answer {
    fn ok(endpoint: String, report: DriftReport) -> Self {
        Answer {
            endpoint,
            error: None,
            model_version: Some(report.model_version.clone()),
            samples: Some(report.samples),
            report: Some(report),
        }
    }

    fn failed(endpoint: String, error: String) -> Self {
        Answer {
            endpoint,
            error: Some(error),
            model_version: None,
            samples: None,
            report: None,
        }
    }
}

/// One bin whose share changed.
#[derive(Debug, Serialize)]
struct Moved {
    bin: String,
    reference_share: f64,
    live_share: f64,
}

#[derive(Debug, Serialize)]
struct FeatureDoc {
    #[serde(flatten)]
    feature: FeatureDrift,
    /// The bins whose share changed most, largest change first.
    moved_most: Vec<Moved>,
}

/// The merged report of the servers running one model.
#[derive(Debug, Serialize)]
struct ModelDoc {
    model_version: String,
    release: Option<String>,
    model_digest: String,
    endpoints: Vec<String>,
    reference: bool,
    note: Option<String>,
    window_seconds: f64,
    samples: u64,
    features: Vec<FeatureDoc>,
    score: Option<predict_buy_api::Distribution>,
}

#[derive(Debug, Serialize)]
struct Doc {
    environment: String,
    stable_below: f64,
    drifted_above: f64,
    epsilon: f64,
    endpoints: Vec<Answer>,
    models: Vec<ModelDoc>,
}

/// Bins named per field in "moved most".
const MOVED_BINS: usize = 2;

pub fn run(a: DriftArgs) -> Outcome {
    let timeout = crate::settings::duration("--timeout", &a.timeout)?;
    let project = open_project(&a.project, a.env.as_deref())?;
    let env = &project.env;
    let rt = crate::settings::runtime(crate::settings::Runtime::Deploy)?;
    let answers = match env.config.target {
        TargetKind::Local => {
            if env.endpoints.is_empty() {
                return Err(CliError::usage(format!(
                    "environment `{}` lists no endpoints in {}",
                    env.name,
                    env.source.display()
                )));
            }
            rt.block_on(ask_endpoints(&env.endpoints, timeout))?
        }
        TargetKind::Kubernetes => rt.block_on(ask_pods(&project, timeout))?,
    };
    for a in &answers {
        if let Some(e) = &a.error {
            eprintln!("warning: {} did not answer /drift: {e}", a.endpoint);
        }
    }
    if answers.iter().all(|a| a.report.is_none()) {
        let names: Vec<&str> = answers.iter().map(|a| a.endpoint.as_str()).collect();
        return Err(CliError::failed(anyhow::anyhow!(
            "no server of environment `{}` answered /drift (asked {})",
            env.name,
            if names.is_empty() {
                "none: no pods run the desired release".to_string()
            } else {
                names.join(", ")
            }
        ))
        .with_hint(format!(
            "run `predict-buy status --env {}` to see what runs there",
            env.name
        )));
    }
    let doc = Doc {
        environment: env.name.to_string(),
        stable_below: predict_buy_model::drift::STABLE_BELOW,
        drifted_above: predict_buy_model::drift::DRIFTED_ABOVE,
        epsilon: predict_buy_model::drift::EPSILON,
        models: merge(&answers),
        endpoints: answers,
    };
    if a.json {
        return crate::project::out_json(&doc);
    }
    crate::project::out(render(&doc))
}

fn client(timeout: Duration) -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| CliError::failed(anyhow::Error::new(e).context("cannot build an HTTP client")))
}

/// `GET /drift` on every local endpoint, at once.
async fn ask_endpoints(
    endpoints: &[predict_buy_deploy::Url],
    timeout: Duration,
) -> Result<Vec<Answer>, CliError> {
    let client = client(timeout)?;
    let asks: Vec<_> = endpoints
        .iter()
        .map(|url| tokio::spawn(ask_endpoint(client.clone(), url.clone())))
        .collect();
    let mut answers = Vec::with_capacity(asks.len());
    for (ask, url) in asks.into_iter().zip(endpoints) {
        answers.push(ask.await.unwrap_or_else(|e| {
            Answer::failed(url.to_string(), format!("the request task failed: {e}"))
        }));
    }
    Ok(answers)
}

async fn ask_endpoint(client: reqwest::Client, url: predict_buy_deploy::Url) -> Answer {
    let name = url.as_str().trim_end_matches('/').to_string();
    let target = match url.join("drift") {
        Ok(t) => t,
        Err(e) => return Answer::failed(name, format!("not a base URL: {e}")),
    };
    let response = match client.get(target).send().await {
        Ok(r) => r,
        Err(e) => return Answer::failed(name, error_chain(&e)),
    };
    let status = response.status();
    match response.text().await {
        Ok(body) => parse(name, status.as_u16(), &body),
        Err(e) => Answer::failed(name, error_chain(&e)),
    }
}

/// `GET /drift` on every pod of the environment's desired release, through the API
/// server's proxy (the way deploy verification reaches pods).
async fn ask_pods(
    project: &crate::commands::deploy::Project,
    timeout: Duration,
) -> Result<Vec<Answer>, CliError> {
    let env = &project.env;
    let settings = env.kube_settings().map_err(deploy_error)?;
    let status = predict_buy_deploy::status(&project.registry, &env.name)
        .await
        .map_err(deploy_error)?;
    let Some(tag) = status.state.and_then(|s| s.desired) else {
        return Err(CliError::failed(anyhow::anyhow!(
            "environment `{}` runs no release yet: nothing to ask for drift",
            env.name
        )));
    };
    let cluster = Cluster::connect(env.config.context.as_deref(), &settings.namespace)
        .await
        .map_err(|e| deploy_error(e.into()))?;
    let pods = cluster
        .release_pods(&tag.to_string())
        .await
        .map_err(|e| deploy_error(e.into()))?;
    let mut answers = Vec::new();
    for pod in pods {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        let endpoint = format!("pod {name}");
        let asked = tokio::time::timeout(
            timeout,
            cluster.pod_request(&name, http_get(), "/drift", None),
        )
        .await;
        answers.push(match asked {
            Err(_) => Answer::failed(endpoint, format!("no answer within {timeout:?}")),
            Ok(Err(e)) => Answer::failed(endpoint, e.to_string()),
            Ok(Ok((status, body))) => {
                parse(endpoint, status.as_u16(), &String::from_utf8_lossy(&body))
            }
        });
    }
    Ok(answers)
}

fn http_get() -> reqwest::Method {
    reqwest::Method::GET
}

fn parse(endpoint: String, status: u16, body: &str) -> Answer {
    if status != 200 {
        let excerpt: String = body.chars().take(200).collect();
        return Answer::failed(endpoint, format!("HTTP {status}: {excerpt}"));
    }
    match serde_json::from_str::<DriftReport>(body) {
        Ok(r) => Answer::ok(endpoint, r),
        Err(e) => Answer::failed(
            endpoint,
            format!(
                "the answer is not a drift report ({e}); is it a predict-buy server that predates /drift?"
            ),
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Adds up the answers of the servers running the same model (same digest, so the
/// same bins), and judges the sums.
fn merge(answers: &[Answer]) -> Vec<ModelDoc> {
    let mut by_digest: BTreeMap<&str, Vec<(&str, &DriftReport)>> = BTreeMap::new();
    for a in answers {
        if let Some(r) = &a.report {
            by_digest
                .entry(r.model_digest.as_str())
                .or_default()
                .push((a.endpoint.as_str(), r));
        }
    }
    by_digest
        .into_values()
        .map(|group| merge_group(&group))
        .collect()
}

fn merge_group(group: &[(&str, &DriftReport)]) -> ModelDoc {
    let (_, first) = group[0];
    let samples = group.iter().map(|(_, r)| r.samples).sum();
    let features = first
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let live = sum_live(group, |r| r.features.get(i).map(|g| &g.distribution));
            let distribution = judged(&f.distribution, &live, samples);
            let feature =
                predict_buy_serve::drift::feature(f.name.clone(), f.kind.clone(), distribution);
            let moved_most = moved_most(&feature.distribution);
            FeatureDoc {
                feature,
                moved_most,
            }
        })
        .collect();
    let score = first.score.as_ref().map(|s| {
        let live = sum_live(group, |r| r.score.as_ref());
        judged(s, &live, samples)
    });
    ModelDoc {
        model_version: first.model_version.clone(),
        release: first.release.clone(),
        model_digest: first.model_digest.clone(),
        endpoints: group.iter().map(|(e, _)| (*e).to_string()).collect(),
        reference: first.reference,
        note: first.note.clone(),
        window_seconds: first.window_seconds,
        samples,
        features,
        score,
    }
}

/// The live counts of one histogram summed over the group; a server whose histogram
/// has other bins (it cannot, with the same digest) is left out of the sum.
fn sum_live<'r>(
    group: &[(&str, &'r DriftReport)],
    pick: impl Fn(&'r DriftReport) -> Option<&'r predict_buy_api::Distribution>,
) -> Vec<u64> {
    let Some(first) = pick(group[0].1) else {
        return Vec::new();
    };
    let mut live = vec![0u64; first.bins.len()];
    for (_, r) in group {
        let Some(d) = pick(r) else { continue };
        if d.bins.len() != live.len() {
            continue;
        }
        for (total, b) in live.iter_mut().zip(&d.bins) {
            *total += b.live_count;
        }
    }
    live
}

/// The reference of `d` against summed live counts, judged as a server judges.
fn judged(
    d: &predict_buy_api::Distribution,
    live: &[u64],
    samples: u64,
) -> predict_buy_api::Distribution {
    let reference: Vec<u64> = d.bins.iter().map(|b| b.reference_count).collect();
    let labels = d.bins.iter().map(|b| b.label.clone()).collect();
    let kinds: Vec<BinKind> = d.bins.iter().map(|b| b.kind).collect();
    predict_buy_serve::drift::distribution(&reference, live, labels, &kinds, samples)
}

fn moved_most(d: &predict_buy_api::Distribution) -> Vec<Moved> {
    let mut bins: Vec<&predict_buy_api::Bin> = d
        .bins
        .iter()
        .filter(|b| (b.live_share - b.reference_share).abs() >= 0.005)
        .collect();
    bins.sort_by(|a, b| {
        let da = (a.live_share - a.reference_share).abs();
        let db = (b.live_share - b.reference_share).abs();
        db.total_cmp(&da)
    });
    if d.bins.iter().all(|b| b.live_count == 0) {
        return Vec::new();
    }
    bins.into_iter()
        .take(MOVED_BINS)
        .map(|b| Moved {
            bin: b.label.clone(),
            reference_share: b.reference_share,
            live_share: b.live_share,
        })
        .collect()
}

fn percent(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

fn render(doc: &Doc) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let answered = doc.endpoints.iter().filter(|a| a.report.is_some()).count();
    let _ = writeln!(
        out,
        "environment {}: {answered} of {} servers answered",
        doc.environment,
        doc.endpoints.len()
    );
    for a in &doc.endpoints {
        match (&a.model_version, a.samples, &a.error) {
            (Some(v), Some(n), _) => {
                let _ = writeln!(out, "  {}  {v}  {n} predictions", a.endpoint);
            }
            (_, _, Some(e)) => {
                let _ = writeln!(out, "  {}  no answer: {e}", a.endpoint);
            }
            _ => {}
        }
    }
    let _ = writeln!(
        out,
        "PSI under {} is stable, up to {} watch, above it drifted",
        doc.stable_below, doc.drifted_above
    );
    for m in &doc.models {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "model {} ({}) on {} server(s): {} predictions in the last {}",
            m.model_version,
            m.model_digest,
            m.endpoints.len(),
            m.samples,
            window(m.window_seconds)
        );
        if !m.reference {
            let _ = writeln!(
                out,
                "  no reference distributions: {}",
                m.note.as_deref().unwrap_or("the model has none")
            );
            continue;
        }
        let _ = writeln!(
            out,
            "{:<18} {:>7}  {:<12} {:>15}  {:>15}  MOVED MOST (training → live)",
            "FIELD", "PSI", "STATUS", "MISSING (REF)", "OUT OF RANGE"
        );
        for f in &m.features {
            let fd = &f.feature;
            let psi = fd
                .distribution
                .psi
                .map_or("-".to_string(), |p| format!("{p:.3}"));
            let missing = format!(
                "{} ({})",
                fd.missing_share.map_or("-".into(), percent),
                percent(fd.reference_missing_share)
            );
            let out_of_range = fd.out_of_range_share.map_or("-".into(), percent);
            // Stable fields' bins move by sampling noise only: naming them would bury
            // the bins that matter (`--json` still lists them).
            let judged = matches!(
                fd.distribution.status,
                predict_buy_api::DriftStatus::Watch | predict_buy_api::DriftStatus::Drifted
            );
            let moved: Vec<String> = f
                .moved_most
                .iter()
                .filter(|_| judged)
                .map(|b| {
                    format!(
                        "{} {} → {}",
                        b.bin,
                        percent(b.reference_share),
                        percent(b.live_share)
                    )
                })
                .collect();
            let row = format!(
                "{:<18} {:>7}  {:<12} {:>15}  {:>15}  {}",
                fd.name,
                psi,
                fd.distribution.status.name(),
                missing,
                out_of_range,
                moved.join("; ")
            );
            let _ = writeln!(out, "{}", row.trim_end());
        }
        if let Some(s) = &m.score {
            let psi = s.psi.map_or("-".to_string(), |p| format!("{p:.3}"));
            let _ = writeln!(out, "{:<18} {:>7}  {}", "(score)", psi, s.status.name());
        }
    }
    out
}

/// `1h`, `10m`, `45s`, as the flag takes it.
fn window(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use predict_buy_api::{Bin, Distribution, DriftStatus};

    fn report(endpoint_live: [u64; 3], digest: &str) -> DriftReport {
        let bins = [
            ("< 0", BinKind::BelowRange),
            ("[0, 1]", BinKind::Value),
            ("(missing)", BinKind::Missing),
        ]
        .iter()
        .zip(endpoint_live)
        .map(|((label, kind), live)| Bin {
            label: label.to_string(),
            kind: *kind,
            reference_count: if *kind == BinKind::Value { 90 } else { 5 },
            reference_share: 0.0,
            live_count: live,
            live_share: 0.0,
        })
        .collect();
        DriftReport {
            model_version: "v1.0.0".into(),
            release: Some("v1.0.0".into()),
            model_digest: digest.into(),
            reference: true,
            note: None,
            reference_source: None,
            window_seconds: 3600.0,
            samples: endpoint_live.iter().sum(),
            min_samples: 100,
            epsilon: 1e-4,
            stable_below: 0.1,
            drifted_above: 0.25,
            features: vec![FeatureDrift {
                name: "Age".into(),
                kind: "number".into(),
                missing_share: None,
                reference_missing_share: 0.05,
                out_of_range_share: None,
                reference_out_of_range_share: 0.05,
                distribution: Distribution {
                    psi: None,
                    status: DriftStatus::Insufficient,
                    bins,
                },
            }],
            score: None,
        }
    }

    #[test]
    fn counts_are_summed_before_psi_is_computed() {
        // One server saw only out-of-range values, the other only in-range ones: alone
        // each looks drifted; together they hold 50% out of range.
        let answers = vec![
            Answer::ok("a".into(), report([100, 0, 0], "sha256:1")),
            Answer::ok("b".into(), report([0, 100, 0], "sha256:1")),
        ];
        let models = merge(&answers);
        assert_eq!(models.len(), 1);
        let m = &models[0];
        assert_eq!(m.samples, 200);
        let age = &m.features[0].feature;
        assert_eq!(age.out_of_range_share, Some(0.5));
        let expected = predict_buy_model::drift::psi(&[5, 90, 5], &[100, 100, 0]).unwrap();
        assert_eq!(age.distribution.psi, Some(expected));
        assert_eq!(age.distribution.status, DriftStatus::Drifted);
        assert_eq!(m.features[0].moved_most[0].bin, "< 0");
    }

    #[test]
    fn different_models_are_reported_apart() {
        let answers = vec![
            Answer::ok("a".into(), report([5, 90, 5], "sha256:1")),
            Answer::ok("b".into(), report([5, 90, 5], "sha256:2")),
            Answer::failed("c".into(), "refused".into()),
        ];
        let models = merge(&answers);
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].endpoints, ["a"]);
        assert_eq!(models[0].features[0].feature.distribution.psi, Some(0.0));
        assert!(models[0].features[0].moved_most.is_empty());
    }

    #[test]
    fn windows_read_like_the_flag() {
        assert_eq!(window(3600.0), "1h");
        assert_eq!(window(600.0), "10m");
        assert_eq!(window(2.0), "2s");
    }
}
