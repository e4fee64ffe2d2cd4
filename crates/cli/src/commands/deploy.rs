//! `deploy`, `rollback`, `promote`, `status` and `history`: thin wrappers over the
//! `predict-buy-deploy` state machine. They resolve the project config, environment
//! and registry, ask for confirmation, and print what happened.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use predict_buy_deploy::kubernetes::Cluster;
use predict_buy_deploy::{
    Deployer, EnvTarget, EnvVerifier, Environment, Fallback, Kind, LoadedConfig, Plan, Progress,
    Report, TargetKind, Verdict, Verifier, history,
};
use predict_buy_registry::{Outcome as Step, Registry, ReleaseTag};

use crate::registry_url::{RegistryArg, registry_error};
use crate::settings::{self, Settings};
use crate::{CliError, Outcome};

/// Flags shared by every command that changes what an environment runs.
#[derive(Args, Clone)]
pub struct TransitionArgs {
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// The confirmation as answered elsewhere, e.g. a workflow's `confirm` input: `y`
    /// (or `yes`) confirms like --yes; anything else stops before any change, with
    /// exit code 1. Checked after the tag and the policy, before --dry-run.
    #[arg(long, value_name = "y|n")]
    pub confirm: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long verification may take before an automatic rollback, e.g. 30s
    /// (default: the environment's `verify_timeout`, else 30s).
    #[arg(long)]
    pub timeout: Option<String>,
    /// How long the environment's lease lasts without renewal; a crashed deploy
    /// blocks others at most this long.
    #[arg(long, default_value = "30s")]
    pub lease_ttl: String,
    /// Print the plan (with --dry-run) or the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub project: ProjectArgs,
}

/// Where the project config and registry are.
#[derive(Args, Clone, Default)]
pub struct ProjectArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Project config (default: predict-buy.yaml in this folder or above).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub struct DeployArgs {
    /// The release to deploy, e.g. v1.2.0.
    pub tag: String,
    /// Environment (default: the one following the current git branch).
    #[arg(long)]
    pub env: Option<String>,
    /// Skip the environment's policy (`require_verified_in`).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub t: TransitionArgs,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// Environment (default: the one following the current git branch).
    #[arg(long)]
    pub env: Option<String>,
    /// Release to return to (default: the last verified one that is not running now).
    #[arg(long)]
    pub to: Option<String>,
    /// Allow `--to` a release that is not verified in this environment.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub t: TransitionArgs,
}

#[derive(Args)]
pub struct PromoteArgs {
    /// The release to promote, e.g. v1.2.0.
    pub tag: String,
    /// The environment to promote to.
    #[arg(long)]
    pub to: String,
    /// Skip the environment's policy (`require_verified_in`): a release verified
    /// nowhere is then deployed as a plain deploy.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub t: TransitionArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Environment (default: the one following the current git branch).
    #[arg(long)]
    pub env: Option<String>,
    /// Remove the environment's lease, whoever holds it: for recovering from a
    /// crashed deploy without waiting for the lease to expire (docs/operations.md).
    #[arg(long)]
    pub break_lease: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub project: ProjectArgs,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Environment (default: the one following the current git branch).
    #[arg(long)]
    pub env: Option<String>,
    /// Print one JSON document (an array of entries, oldest first).
    #[arg(long)]
    pub json: bool,
    /// Show only the newest N entries.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub project: ProjectArgs,
}

/// The exit code and hint of a deploy error; the same as `?` does.
pub(crate) fn deploy_error(e: predict_buy_deploy::Error) -> CliError {
    e.into()
}

/// The project config, one of its environments and the registry.
pub(crate) struct Project {
    pub(crate) settings: Settings,
    pub(crate) config: LoadedConfig,
    pub(crate) env: Environment,
    pub(crate) url: predict_buy_registry::RegistryUrl,
    pub(crate) registry: Arc<Registry>,
}

/// The engine for any environment: a local target or a Kubernetes namespace.
type EnvDeployer = Deployer<EnvTarget, EnvVerifier>;

pub(crate) fn open_project(p: &ProjectArgs, env: Option<&str>) -> Result<Project, CliError> {
    let settings = Settings::from_process()?;
    let config = settings.require_project(p.config.as_deref())?;
    let env = settings.environment(&config, env)?;
    let url = settings.registry_url_in(p.registry.registry.as_deref(), Some(&config))?;
    // Every command here reads releases or history that must already be there: a
    // missing registry is reported, never created.
    let registry = runtime()?.block_on(crate::commands::registry::open_existing_at(&url))?;
    Ok(Project {
        settings,
        config,
        env,
        url,
        registry: Arc::new(registry),
    })
}

/// Connects to the environment's target (a Kubernetes environment reaches its
/// cluster here) and builds the engine.
async fn deployer(project: &Project, t: &TransitionArgs) -> Result<EnvDeployer, CliError> {
    let s = &project.settings;
    let timeout = s.verify_timeout(t.timeout.as_deref(), &project.env)?;
    let lease_ttl = settings::duration("--lease-ttl", &t.lease_ttl)?;
    let http = Verifier::new(timeout)?.with_admin_token(s.admin_token(None)?);
    let (target, verifier) = predict_buy_deploy::connect(&project.env, http, &project.url)
        .await
        .map_err(deploy_error)?;
    let git_root = project
        .config
        .config
        .require_git_tag
        .then(|| project.config.root().to_path_buf());
    Ok(Deployer::new(
        Arc::clone(&project.registry),
        project.env.clone(),
        target,
        verifier,
        s.identity(),
    )
    .require_git_tags_in(git_root)
    .with_lease_ttl(lease_ttl))
}

fn parse_tag(input: &str) -> Result<ReleaseTag, CliError> {
    ReleaseTag::parse(input).map_err(registry_error)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    settings::runtime(settings::Runtime::Deploy)
}

pub fn run_deploy(a: DeployArgs) -> Outcome {
    let tag = parse_tag(&a.tag)?;
    let project = open_project(&a.t.project, a.env.as_deref())?;
    runtime()?.block_on(async {
        let deployer = deployer(&project, &a.t).await?;
        let release = deployer.validate(&tag).await.map_err(deploy_error)?;
        if !a.force {
            deployer.check_policy(&tag).await.map_err(deploy_error)?;
        }
        let plan = deployer
            .plan(release, Kind::Deploy)
            .await
            .map_err(deploy_error)?;
        carry_out(&deployer, &plan, &a.t).await
    })
}

pub fn run_promote(a: PromoteArgs) -> Outcome {
    let tag = parse_tag(&a.tag)?;
    let project = open_project(&a.t.project, Some(&a.to))?;
    runtime()?.block_on(async {
        let deployer = deployer(&project, &a.t).await?;
        let release = deployer.validate(&tag).await.map_err(deploy_error)?;
        // Before the policy: whatever it says, there is nothing to do.
        if deployer.runs_verified(&tag).await.map_err(deploy_error)? {
            print_already_running(&project.env.name.to_string(), &tag, a.t.json);
            return Ok(());
        }
        let verified_in = match &project.env.config.require_verified_in {
            Some(required) => match deployer.check_policy(&tag).await {
                Ok(()) => Ok(required.clone()),
                Err(refusal) if a.force => Err(refusal.to_string()),
                Err(refusal) => return Err(deploy_error(refusal)),
            },
            None => match verified_elsewhere(&project, &tag).await? {
                Some(from) => Ok(from),
                None if a.force => Err(format!(
                    "release `{tag}` is not verified in any other environment"
                )),
                None => return Err(nothing_to_promote(&project, &tag)),
            },
        };
        let kind = match verified_in {
            Ok(from) => Kind::Promote { from },
            Err(refusal) => {
                eprintln!("warning: {refusal}; deploying it anyway (--force)");
                Kind::Deploy
            }
        };
        let plan = deployer.plan(release, kind).await.map_err(deploy_error)?;
        carry_out(&deployer, &plan, &a.t).await
    })
}

fn print_already_running(env: &str, tag: &ReleaseTag, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"env": env, "release": tag.to_string(), "outcome": "already_running"})
        );
    } else {
        println!("{tag} already runs on {env}, verified: nothing to do");
    }
}

/// Without `require_verified_in`, a promotion still needs the release verified in
/// some other environment of the config: that is what "promote" means.
async fn verified_elsewhere(
    project: &Project,
    tag: &ReleaseTag,
) -> Result<Option<String>, CliError> {
    for name in project.config.config.environments.keys() {
        if name == project.env.name.as_str() {
            continue;
        }
        let env = predict_buy_registry::EnvName::parse(name).map_err(registry_error)?;
        let entries = project
            .registry
            .history(&env)
            .await
            .map_err(registry_error)?;
        if history::is_good(&entries, tag) {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

fn nothing_to_promote(project: &Project, tag: &ReleaseTag) -> CliError {
    CliError::input(anyhow::anyhow!(
        "release `{tag}` is not verified in any environment other than `{}`, so there is nothing to promote",
        project.env.name
    ))
    .with_hint(format!(
        "deploy it to a lower environment first (`predict-buy deploy {tag} --env ENV`), or pass --force"
    ))
}

pub fn run_rollback(a: RollbackArgs) -> Outcome {
    let project = open_project(&a.t.project, a.env.as_deref())?;
    let to = a.to.as_deref().map(parse_tag).transpose()?;
    runtime()?.block_on(async {
        let deployer = deployer(&project, &a.t).await?;
        let tag = match to {
            Some(tag) => {
                if !a.force {
                    deployer
                        .check_rollback_target(&tag)
                        .await
                        .map_err(deploy_error)?;
                }
                tag
            }
            None => deployer.rollback_target().await.map_err(deploy_error)?,
        };
        let release = deployer.validate(&tag).await.map_err(deploy_error)?;
        let plan = deployer
            .plan(release, Kind::Rollback)
            .await
            .map_err(deploy_error)?;
        carry_out(&deployer, &plan, &a.t).await
    })
}

/// Dry run, confirmation, execution and the report: the part every transition shares.
async fn carry_out(deployer: &EnvDeployer, plan: &Plan, t: &TransitionArgs) -> Outcome {
    let confirmed = match &t.confirm {
        Some(answer) if is_yes(answer) => true,
        Some(answer) => {
            return Err(CliError::failed(anyhow::anyhow!(
                "not confirmed (--confirm `{answer}`): nothing was changed on `{}`",
                plan.env
            )));
        }
        None => t.yes,
    };
    if t.dry_run {
        let server = match deployer.target() {
            EnvTarget::Kubernetes(k) => Some(server_dry_run(k, deployer, plan).await?),
            EnvTarget::Local(_) => None,
        };
        if t.json {
            // One document, so `jq .env` and friends read it as they read a local plan.
            let mut doc = serde_json::to_value(plan).expect("plans serialise");
            if let (Some(changes), Some(map)) = (&server, doc.as_object_mut()) {
                map.insert(
                    "server_dry_run".into(),
                    serde_json::json!({ "deployment": changes }),
                );
            }
            crate::project::out_json(&doc)?;
        } else {
            println!("{plan}");
            if let Some(changes) = &server {
                print_server_dry_run(changes);
            }
            println!("dry run: nothing was changed");
        }
        return Ok(());
    }
    if !confirmed {
        confirm(plan)?;
    }
    let announce = |step: Progress| {
        if t.json {
            return;
        }
        match step {
            // Printed only once the lease is ours: a refused deploy changes nothing.
            Progress::Locked => eprintln!(
                "{} {} on {}: applying, then verifying {} endpoint(s) (timeout {:.0}s)…",
                match plan.kind {
                    Kind::Rollback => "rolling back to",
                    _ => "deploying",
                },
                plan.release,
                plan.env,
                plan.endpoints.len(),
                plan.verify_timeout_ms as f64 / 1000.0
            ),
            Progress::RollingBack { to } => eprintln!(
                "{} was not verified; returning {} to {}…",
                plan.release,
                plan.env,
                to.map_or("nothing".into(), |t| t.to_string())
            ),
        }
    };
    let report = deployer
        .execute_observed(plan, announce)
        .await
        .map_err(deploy_error)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if t.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialise")
        );
    } else {
        print_report(&report);
    }
    if report.is_verified() {
        Ok(())
    } else {
        Err(failure_error(&report))
    }
}

/// Asks the API server what applying the plan would change (`dryRun=All`: validated
/// and defaulted, not stored): the changes from the live Deployment, `None` when there
/// is no live Deployment yet.
async fn server_dry_run(
    k: &predict_buy_deploy::kubernetes::KubernetesTarget,
    deployer: &EnvDeployer,
    plan: &Plan,
) -> Result<Option<Vec<predict_buy_deploy::kubernetes::diff::Change>>, CliError> {
    use predict_buy_deploy::kubernetes::diff::diff;
    fn encode<T: serde::Serialize>(d: &T) -> serde_json::Value {
        serde_json::to_value(d).expect("Deployments serialise")
    }
    let live = k
        .cluster()
        .deployment()
        .await
        .map_err(|e| deploy_error(e.into()))?;
    let applied = k
        .dry_run(&plan.env, plan.record(), deployer.actor())
        .await
        .map_err(|e| deploy_error(e.into()))?;
    Ok(live.map(|l| diff(Some(&encode(&l)), &encode(&applied))))
}

fn print_server_dry_run(changes: &Option<Vec<predict_buy_deploy::kubernetes::diff::Change>>) {
    match changes {
        None => println!("server dry run: the Deployment would be created"),
        Some(c) if c.is_empty() => println!("server dry run: the Deployment would not change"),
        Some(c) => {
            println!("server dry run: the Deployment would change");
            for change in c {
                println!("  {change}");
            }
        }
    }
}

fn confirm(plan: &Plan) -> Outcome {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::input(anyhow::anyhow!(
            "refusing to change `{}` without confirmation: stdin is not a terminal",
            plan.env
        ))
        .with_hint("pass --yes to confirm non-interactively"));
    }
    eprintln!("{plan}");
    eprint!("Proceed with {} on {}? [y/N] ", plan.release, plan.env);
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::failed(anyhow::anyhow!("cannot read the answer: {e}")))?;
    if is_yes(&answer) {
        Ok(())
    } else {
        // Declining is an answer, not bad input: exit 1, as apt does.
        Err(CliError::failed(anyhow::anyhow!(
            "cancelled: nothing was changed"
        )))
    }
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn print_report(r: &Report) {
    let failure = match &r.verdict {
        Verdict::Verified {
            verify_ms,
            endpoint_verify_ms,
        } => {
            let per: Vec<String> = endpoint_verify_ms
                .iter()
                .map(|(e, ms)| format!("{e} {ms:.0} ms"))
                .collect();
            println!(
                "{} verified on {} in {verify_ms:.0} ms ({})",
                r.release,
                r.env,
                per.join(", ")
            );
            return;
        }
        Verdict::AlreadyRunning => {
            println!(
                "{} already runs on {}, verified: nothing to do",
                r.release, r.env
            );
            return;
        }
        Verdict::RolledBack {
            failure,
            rolled_back_to,
            rollback_verify_ms,
        } => {
            println!("{} failed verification on {}: {failure}", r.release, r.env);
            println!("rolled back to {rolled_back_to}, verified in {rollback_verify_ms:.0} ms");
            return;
        }
        Verdict::Failed { failure, rollback } => {
            println!("{} failed verification on {}: {failure}", r.release, r.env);
            rollback
        }
        Verdict::Unverified { failure, rollback } => {
            println!(
                "{} could not be verified on {} (the environment, not the release, is in question): {failure}",
                r.release, r.env
            );
            rollback
        }
    };
    match failure {
        Fallback::Verified {
            rolled_back_to,
            rollback_verify_ms,
        } => println!("rolled back to {rolled_back_to}, verified in {rollback_verify_ms:.0} ms"),
        Fallback::Unverified {
            rolled_back_to,
            rollback_failure,
        } => println!(
            "rolled back to {rolled_back_to}, which could not be verified either: {rollback_failure}"
        ),
        Fallback::Failed {
            rolled_back_to,
            rollback_failure,
        } => println!(
            "rolled back to {rolled_back_to}, but it did not verify either: {rollback_failure}"
        ),
        Fallback::Restored { rolled_back_to } => println!(
            "no verified release to roll back to; desired release restored to {}",
            rolled_back_to
                .as_ref()
                .map_or("nothing".into(), |t| t.to_string())
        ),
    }
}

fn failure_error(r: &Report) -> CliError {
    let after = match &r.verdict {
        Verdict::RolledBack { rolled_back_to, .. }
        | Verdict::Failed {
            rollback: Fallback::Verified { rolled_back_to, .. },
            ..
        }
        | Verdict::Unverified {
            rollback: Fallback::Verified { rolled_back_to, .. },
            ..
        } => format!("rolled back to {rolled_back_to}"),
        Verdict::Failed {
            rollback:
                Fallback::Failed { rolled_back_to, .. } | Fallback::Unverified { rolled_back_to, .. },
            ..
        }
        | Verdict::Unverified {
            rollback:
                Fallback::Failed { rolled_back_to, .. } | Fallback::Unverified { rolled_back_to, .. },
            ..
        } => format!("rolled back to {rolled_back_to}, which did not verify either"),
        _ => "nothing verified to roll back to".to_string(),
    };
    let (what, hint) = match &r.verdict {
        Verdict::Unverified { .. } => (
            "could not be verified (it is not marked failed)",
            format!(
                "check the environment's endpoints (`predict-buy status --env {}`), then deploy it again",
                r.env
            ),
        ),
        _ => (
            "was not verified",
            format!("see `predict-buy history --env {}`", r.env),
        ),
    };
    CliError::failed(anyhow::anyhow!(
        "{} on {} {what}; {after}",
        r.release,
        r.env
    ))
    .with_hint(hint)
}

pub fn run_status(a: StatusArgs) -> Outcome {
    let project = open_project(&a.project, a.env.as_deref())?;
    if a.break_lease {
        let broken = runtime()?
            .block_on(project.registry.break_lease(&project.env.name))
            .map_err(registry_error)?;
        match broken {
            Some(l) => eprintln!(
                "broke the lease of {} for {} (held since {})",
                l.holder, l.operation, l.acquired_at
            ),
            None => eprintln!("no lease to break on {}", project.env.name),
        }
    }
    let rt = runtime()?;
    let status = rt
        .block_on(predict_buy_deploy::status(
            &project.registry,
            &project.env.name,
        ))
        .map_err(deploy_error)?;
    let env = &project.env;
    // A Kubernetes environment also shows what the cluster runs, which may differ
    // from the registry's desired release after a hand edit or a `kubectl rollout undo`.
    let (target, cluster) = match env.config.target {
        TargetKind::Local => (
            match predict_buy_deploy::target_for(env) {
                Ok(t) => predict_buy_deploy::Target::describe(&t),
                Err(e) => e.to_string(),
            },
            None,
        ),
        TargetKind::Kubernetes => {
            let settings = env.kube_settings().map_err(deploy_error)?;
            let cluster = rt.block_on(async {
                let c =
                    Cluster::connect(env.config.context.as_deref(), &settings.namespace).await?;
                let status = c.status().await?;
                Ok::<_, predict_buy_deploy::kubernetes::KubeError>((c, status))
            });
            let (c, cs) = cluster.map_err(|e| deploy_error(e.into()))?;
            (
                format!(
                    "kubernetes namespace `{}` on {}",
                    settings.namespace,
                    c.server()
                ),
                Some(cs),
            )
        }
    };
    if a.json {
        /// The registry's status, then what the cluster runs (Kubernetes only).
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            status: &'a predict_buy_deploy::Status,
            #[serde(skip_serializing_if = "Option::is_none")]
            cluster: Option<&'a predict_buy_deploy::kubernetes::ClusterStatus>,
        }
        crate::project::out_json(&Doc {
            status: &status,
            cluster: cluster.as_ref(),
        })?;
        return Ok(());
    }
    println!("environment  {} ({target})", env.name);
    match &status.state {
        Some(s) => println!(
            "desired      {} (generation {}, set {} by {})",
            s.desired
                .as_ref()
                .map_or("nothing".into(), |t| t.to_string()),
            s.generation,
            s.updated_at,
            s.updated_by
        ),
        None => println!("desired      nothing (never deployed)"),
    }
    match &status.last {
        Some(e) => println!(
            "last         #{} {} {} at {} by {}{}",
            e.seq,
            outcome_name(e.outcome),
            e.release.as_ref().map_or("-".into(), |t| t.to_string()),
            e.time,
            e.actor,
            if e.message.is_empty() {
                String::new()
            } else {
                format!(" — {}", e.message)
            }
        ),
        None => println!("last         no history"),
    }
    match (&status.lease, status.lease_active) {
        (Some(l), true) => println!(
            "lease        held by {} for {} since {} (expires {})",
            l.holder, l.operation, l.acquired_at, l.expires_at
        ),
        (Some(l), false) => println!(
            "lease        expired: {} held it for {} since {}",
            l.holder, l.operation, l.acquired_at
        ),
        (None, _) => println!("lease        free"),
    }
    if let Some(cs) = &cluster {
        print!("{cs}");
    }
    if let Some(i) = &status.interrupted {
        println!(
            "state        interrupted: #{} ({} of {}) started at {} never finished",
            i.seq,
            i.message,
            i.release.as_ref().map_or("-".into(), |t| t.to_string()),
            i.time
        );
        println!(
            "hint: check what runs with `predict-buy status`, then deploy again or `predict-buy rollback --env {}`",
            env.name
        );
    }
    Ok(())
}

fn outcome_name(o: Step) -> &'static str {
    match o {
        Step::Started => "started",
        Step::Verified => "verified",
        Step::Failed => "failed",
        Step::RolledBack => "rolled_back",
        Step::Interrupted => "interrupted",
        Step::Unverified => "unverified",
        Step::ShadowStarted => "shadow_started",
        Step::ShadowStopped => "shadow_stopped",
    }
}

pub fn run_history(a: HistoryArgs) -> Outcome {
    let project = open_project(&a.project, a.env.as_deref())?;
    let mut entries = runtime()?
        .block_on(project.registry.history(&project.env.name))
        .map_err(registry_error)?;
    if let Some(n) = a.limit {
        entries.drain(..entries.len().saturating_sub(n));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("history serialises")
        );
        return Ok(());
    }
    if entries.is_empty() {
        println!("no history for {}", project.env.name);
        return Ok(());
    }
    println!(
        "{:>4}  {:<25}  {:<9}  {:<9}  {:<12}  {:<20}  MESSAGE",
        "SEQ", "TIME", "RELEASE", "PREVIOUS", "OUTCOME", "ACTOR"
    );
    for e in &entries {
        let time = e.time.round(jiff::Unit::Second).unwrap_or(e.time);
        println!(
            "{:>4}  {:<25}  {:<9}  {:<9}  {:<12}  {:<20}  {}",
            e.seq,
            time.to_string(),
            e.release.as_ref().map_or("-".into(), |t| t.to_string()),
            e.previous.as_ref().map_or("-".into(), |t| t.to_string()),
            outcome_name(e.outcome),
            e.actor,
            e.message
        );
    }
    Ok(())
}
