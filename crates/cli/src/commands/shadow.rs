//! `predict-buy shadow start|report|stop`: score a release beside the serving one on
//! live requests, without answering with it (see `predict_buy_deploy::shadow`).

use std::sync::Arc;

use clap::{Args, Subcommand};
use predict_buy_deploy::Verifier;
use predict_buy_deploy::shadow::{Endpoints, ShadowError, ShadowReport, Shadows};
use predict_buy_registry::ReleaseTag;

use crate::commands::deploy::{Project, ProjectArgs, open_project};
use crate::error::{CliError, Outcome};
use crate::project::{out, out_json};
use crate::settings;

#[derive(Subcommand)]
pub enum ShadowCommand {
    /// Make every server of the environment score TAG beside the serving release.
    Start(StartArgs),
    /// What the shadow scored so far, added up over every endpoint.
    Report(ReportArgs),
    /// End the shadow and record its final numbers in the history.
    Stop(StopArgs),
}

#[derive(Args)]
pub struct StartArgs {
    /// The release to shadow, e.g. v1.3.0.
    pub tag: String,
    #[arg(long)]
    pub env: Option<String>,
    /// How long to wait for every endpoint to load it: `30s`, `2m`.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    #[command(flatten)]
    pub project: ProjectArgs,
}

#[derive(Args)]
pub struct ReportArgs {
    #[arg(long)]
    pub env: Option<String>,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub project: ProjectArgs,
}

#[derive(Args)]
pub struct StopArgs {
    #[arg(long)]
    pub env: Option<String>,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub fn run(c: ShadowCommand) -> Outcome {
    match c {
        ShadowCommand::Start(a) => start(a),
        ShadowCommand::Report(a) => report(a),
        ShadowCommand::Stop(a) => stop(a),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    settings::runtime(settings::Runtime::Deploy)
}

/// The environment's servers as `GET /traffic` reaches them: its local endpoints, or
/// its namespace's pods through the API server.
async fn shadows(project: &Project) -> Result<Shadows, CliError> {
    let http = Verifier::new(predict_buy_deploy::verify::DEFAULT_TIMEOUT)?;
    let (target, _) = predict_buy_deploy::connect(&project.env, http, &project.url).await?;
    Shadows::new(
        Arc::clone(&project.registry),
        project.env.name.clone(),
        Endpoints::of(&target),
        project.settings.identity(),
    )
    .map_err(shadow_error)
}

fn shadow_error(e: ShadowError) -> CliError {
    let hint = match &e {
        ShadowError::NoShadow { env } => Some(format!(
            "start one with `predict-buy shadow start TAG --env {env}`"
        )),
        ShadowError::NotLoaded { endpoint, .. } => Some(format!(
            "check {endpoint}: is it running `predict-buy serve` following the environment (pods need `--env`)?"
        )),
        _ => None,
    };
    let code = e.exit_code();
    let error = match e {
        // The registry's own conversion knows its codes and hints.
        ShadowError::Registry(r) => return CliError::from(r),
        other => other,
    };
    let cli = if code == 2 {
        CliError::input(error)
    } else {
        CliError::failed(error)
    };
    match hint {
        Some(h) => cli.with_hint(h),
        None => cli,
    }
}

fn start(a: StartArgs) -> Outcome {
    let tag = ReleaseTag::parse(&a.tag).map_err(CliError::from)?;
    let timeout = settings::duration("--timeout", &a.timeout)?;
    let project = open_project(&a.project, a.env.as_deref())?;
    runtime()?.block_on(async {
        let shadows = shadows(&project).await?.with_timeout(timeout);
        let candidate = shadows
            .start(&tag, |bytes| {
                let model =
                    predict_buy_model::Model::from_bytes(bytes).map_err(|e| chain(&e))?;
                model.self_check().map_err(|e| chain(&e))
            })
            .await
            .map_err(shadow_error)?;
        eprintln!(
            "shadow of {} running in `{}`: every endpoint loaded it; see `predict-buy shadow report --env {}`",
            candidate.release, candidate.env, candidate.env
        );
        Ok(())
    })
}

fn report(a: ReportArgs) -> Outcome {
    let project = open_project(&a.project, a.env.as_deref())?;
    runtime()?.block_on(async {
        let report = shadows(&project)
            .await?
            .report()
            .await
            .map_err(shadow_error)?;
        if a.json {
            out_json(&report)
        } else {
            out(render(&report))
        }
    })
}

fn stop(a: StopArgs) -> Outcome {
    let project = open_project(&a.project, a.env.as_deref())?;
    runtime()?.block_on(async {
        let stopped = shadows(&project)
            .await?
            .stop()
            .await
            .map_err(shadow_error)?;
        if a.json {
            out_json(&stopped)?;
        } else if let Some(r) = &stopped.report {
            out(render(r))?;
        }
        eprintln!("{}", stopped.summary);
        Ok(())
    })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{:.2}%", v * 100.0))
}

fn micros(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(us) if us >= 1000.0 => format!("{:.2} ms", us / 1000.0),
        Some(us) => format!("{us:.0} µs"),
    }
}

/// The human report: one block per question the shadow answers.
pub fn render(r: &ShadowReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let primary = r.primary.as_ref();
    let shadow = r.shadow.as_ref();
    let name = |x: Option<&predict_buy_deploy::shadow::ReleaseSummary>| {
        x.map_or("?".to_string(), |x| x.version.clone())
    };
    let _ = writeln!(
        s,
        "shadow of {} beside {} in `{}` (started {} by {})",
        r.release,
        name(primary),
        r.env,
        r.started_at,
        r.started_by
    );
    let _ = writeln!(s, "endpoints:          {}", r.endpoints.len());
    let _ = writeln!(s, "requests compared:  {} instances", r.compared);
    let _ = writeln!(s, "class agreement:    {}", pct(r.agreement));
    let c = r.confusion;
    let _ = writeln!(
        s,
        "confusion (rows: {}, columns: {}):",
        name(primary),
        name(shadow)
    );
    let _ = writeln!(s, "                 shadow 0   shadow 1");
    let _ = writeln!(s, "  primary 0   {:>10} {:>10}", c[0][0], c[0][1]);
    let _ = writeln!(s, "  primary 1   {:>10} {:>10}", c[1][0], c[1][1]);
    let num = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.4}"));
    let _ = writeln!(
        s,
        "|Δ probability|:    mean {}, p99 {} (estimated within its bucket)",
        num(r.mean_abs_delta),
        num(r.p99_abs_delta)
    );
    let _ = writeln!(
        s,
        "release        role      requests  positives   p50 latency  p99 latency  errors"
    );
    for x in [primary, shadow].into_iter().flatten() {
        let role = match x.role {
            predict_buy_deploy::shadow::Role::Primary => "primary",
            predict_buy_deploy::shadow::Role::Shadow => "shadow",
            predict_buy_deploy::shadow::Role::Canary => "canary",
        };
        let _ = writeln!(
            s,
            "{:<14} {:<8} {:>9} {:>10} {:>13} {:>12} {:>7}",
            x.version,
            role,
            x.requests,
            pct(x.positive_share),
            micros(x.latency_p50_us),
            micros(x.latency_p99_us),
            x.errors
        );
    }
    if r.skipped > 0 {
        let _ = writeln!(
            s,
            "skipped:            {} instances (the shadow's queue was full; answers never wait for it)",
            r.skipped
        );
    }
    for p in &r.problems {
        let _ = writeln!(s, "warning: {p}");
    }
    s
}
