//! `predict-buy model push|pull|list|show|verify`: model artifacts in the registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use predict_buy_model::Model;
use predict_buy_registry::{ArtifactInfo, ArtifactPointer, Digest, Registry, ReleaseTag};
use serde::Serialize;

use crate::commands::registry::{describe, leftovers, open_existing};
use crate::project::outln;
use crate::registry_url::{RegistryArg, open_registry, registry_error, runtime};
use crate::{CliError, Outcome};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Store an artifact in the registry; prints its digest. Pushing again is a no-op.
    Push(PushArgs),
    /// Copy an artifact out of the registry, checking its digest.
    Pull(PullArgs),
    /// Every stored artifact.
    List(ListArgs),
    /// One artifact: where it is stored and what the model is.
    Show(ShowArgs),
    /// Re-hash every stored artifact and name each corrupt one.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct PushArgs {
    /// The artifact file (e.g. models/model.pbm).
    pub path: PathBuf,
    /// Also write a pointer file `PATH.ref.yaml` (digest, size, path) to commit to git.
    #[arg(long)]
    pub pointer: bool,
    /// Print one JSON document on stdout (digest, size, whether it was uploaded).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

#[derive(Args)]
pub struct PullArgs {
    /// A digest (`sha256:<hex>` or a unique prefix of at least 8 hex digits) or a
    /// pointer file written by `model push --pointer`.
    pub digest: String,
    /// Where to write the artifact; default: the pointer's path, else `model-<digest>.pbm`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON document on stdout (digest, size, path written).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

/// `model list` and `release list` take the same flags.
#[derive(Args)]
pub struct ListArgs {
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

#[derive(Args)]
pub struct ShowArgs {
    /// A digest (`sha256:<hex>` or a unique prefix of at least 8 hex digits).
    pub digest: String,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

pub fn run(c: ModelCommand) -> Outcome {
    let rt = runtime()?;
    match c {
        ModelCommand::Push(a) => rt.block_on(push(&a)),
        ModelCommand::Pull(a) => rt.block_on(pull(&a)),
        ModelCommand::List(a) => rt.block_on(list(&a)),
        ModelCommand::Show(a) => rt.block_on(show(&a)),
        ModelCommand::Verify(a) => rt.block_on(verify(&a)),
    }
}

/// Reads a file and checks it is an artifact this build can load, so the registry
/// never holds something `serve` would refuse.
pub fn load_artifact_file(path: &Path) -> Result<(Vec<u8>, Model), CliError> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(CliError::input)?;
    let model = Model::from_bytes(&bytes)
        .with_context(|| format!("{} is not a loadable model artifact", path.display()))
        .map_err(|e| {
            CliError::input(e)
                .with_hint("push the file `predict-buy train` wrote (models/model.pbm by default)")
        })?;
    Ok((bytes, model))
}

/// Stores a validated artifact; the bytes stored are exactly the bytes validated.
pub async fn push_artifact(
    registry: &Registry,
    path: &Path,
    bytes: Vec<u8>,
) -> Result<predict_buy_registry::PushOutcome, CliError> {
    let pushed = registry
        .push_bytes(bytes.into())
        .await
        .map_err(registry_error)?;
    if pushed.uploaded {
        eprintln!(
            "pushed {} ({} bytes) to {}",
            path.display(),
            pushed.size,
            registry.describe()
        );
    } else {
        eprintln!(
            "{} is already stored in {}",
            path.display(),
            registry.describe()
        );
    }
    Ok(pushed)
}

async fn push(a: &PushArgs) -> Outcome {
    let (bytes, _model) = load_artifact_file(&a.path)?;
    let registry = open_registry(a.registry.registry.as_deref())?;
    let pushed = push_artifact(&registry, &a.path, bytes).await?;
    let mut pointer = None;
    if a.pointer {
        let pointer_path = ArtifactPointer::path_for(&a.path);
        ArtifactPointer {
            digest: pushed.digest.clone(),
            size: pushed.size,
            path: a.path.display().to_string(),
        }
        .write(&pointer_path)
        .map_err(registry_error)?;
        eprintln!("wrote pointer {}", pointer_path.display());
        pointer = Some(pointer_path);
    }
    if a.json {
        let doc = serde_json::json!({
            "digest": pushed.digest,
            "size": pushed.size,
            "uploaded": pushed.uploaded,
            "path": a.path,
            "pointer": pointer,
            "registry": registry.describe(),
        });
        crate::project::out_json(&doc)?;
    } else {
        outln!("{}", pushed.digest)?;
    }
    Ok(())
}

/// A digest given on the command line, or the one a pointer file names.
async fn resolve_reference(
    registry: &Registry,
    reference: &str,
) -> Result<(Digest, Option<ArtifactPointer>), CliError> {
    let as_path = Path::new(reference);
    if reference.ends_with(".ref.yaml") || (as_path.is_file() && !looks_like_digest(reference)) {
        let pointer = ArtifactPointer::read(as_path).map_err(registry_error)?;
        return Ok((pointer.digest.clone(), Some(pointer)));
    }
    let digest = registry
        .resolve_digest(reference)
        .await
        .map_err(registry_error)?;
    Ok((digest, None))
}

/// A pointer sits beside its artifact (`model.pbm.ref.yaml` → `model.pbm`), wherever
/// the command runs; the path recorded inside is the fallback for other names.
fn artifact_beside_pointer(pointer_file: &str, pointer: &ArtifactPointer) -> PathBuf {
    pointer_file
        .strip_suffix(".ref.yaml")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(&pointer.path), PathBuf::from)
}

pub fn looks_like_digest(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

async fn pull(a: &PullArgs) -> Outcome {
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let (digest, pointer) = resolve_reference(&registry, &a.digest).await?;
    let out = a
        .out
        .clone()
        .or_else(|| pointer.map(|p| artifact_beside_pointer(&a.digest, &p)))
        .unwrap_or_else(|| PathBuf::from(format!("model-{}.pbm", digest.short())));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(crate::error::IoError::write(dir))?;
    }
    let size = registry
        .pull_to(&digest, &out)
        .await
        .map_err(registry_error)?;
    eprintln!("pulled {digest} ({size} bytes) to {}", out.display());
    if a.json {
        let doc = serde_json::json!({
            "digest": digest,
            "size": size,
            "path": out,
            "registry": registry.describe(),
        });
        crate::project::out_json(&doc)?;
    } else {
        outln!("{}", out.display())?;
    }
    Ok(())
}

/// Which release tags name each artifact.
async fn releases_by_digest(
    registry: &Registry,
) -> Result<BTreeMap<Digest, Vec<ReleaseTag>>, CliError> {
    let mut map: BTreeMap<Digest, Vec<ReleaseTag>> = BTreeMap::new();
    for r in registry.list_releases().await.map_err(registry_error)? {
        map.entry(r.model_digest).or_default().push(r.tag);
    }
    Ok(map)
}

#[derive(Serialize)]
struct ListedArtifact {
    #[serde(flatten)]
    info: ArtifactInfo,
    releases: Vec<ReleaseTag>,
}

async fn list(a: &ListArgs) -> Outcome {
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let artifacts = registry.list_artifacts().await.map_err(registry_error)?;
    let mut releases = releases_by_digest(&registry).await?;
    let listed: Vec<ListedArtifact> = artifacts
        .into_iter()
        .map(|info| ListedArtifact {
            releases: releases.remove(&info.digest).unwrap_or_default(),
            info,
        })
        .collect();
    if a.json {
        crate::project::out_json(&listed)?;
        return Ok(());
    }
    if listed.is_empty() {
        eprintln!("no artifacts in {}", registry.describe());
        return Ok(());
    }
    outln!(
        "{:<12}  {:>12}  {:<20}  RELEASES",
        "DIGEST",
        "SIZE",
        "STORED"
    )?;
    for l in &listed {
        outln!(
            "{:<12}  {:>12}  {:<20}  {}",
            l.info.digest.short(),
            l.info.size,
            short_time(&l.info.stored_at),
            join_tags(&l.releases)
        )?;
    }
    Ok(())
}

pub fn short_time(t: &jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn join_tags(tags: &[ReleaseTag]) -> String {
    if tags.is_empty() {
        return "-".to_string();
    }
    tags.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `model show` reports about the model inside an artifact.
#[derive(Serialize)]
struct ModelSummary<'a> {
    name: &'a str,
    params: &'a serde_json::Value,
    n_trees: usize,
    features: &'a [String],
    train_rows: usize,
    data_digest: Option<&'a str>,
    trained_at: &'a str,
    tool_version: &'a str,
    threshold: &'a predict_buy_model::Threshold,
    metrics: Option<&'a predict_buy_model::EvalReport>,
}

#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    info: &'a ArtifactInfo,
    releases: &'a [ReleaseTag],
    model: ModelSummary<'a>,
}

async fn show(a: &ShowArgs) -> Outcome {
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let digest = registry
        .resolve_digest(&a.digest)
        .await
        .map_err(registry_error)?;
    let info = registry
        .show_artifact(&digest)
        .await
        .map_err(registry_error)?;
    let bytes = registry.pull(&digest).await.map_err(registry_error)?;
    let model = Model::from_bytes(&bytes).map_err(|e| {
        CliError::failed(anyhow::Error::new(e).context(format!(
            "artifact {digest} is not a loadable model artifact"
        )))
    })?;
    let releases = releases_by_digest(&registry)
        .await?
        .remove(&digest)
        .unwrap_or_default();
    let m = model.metadata();
    let shown = Shown {
        info: &info,
        releases: &releases,
        model: ModelSummary {
            name: &m.model,
            params: &m.params,
            n_trees: m.n_trees,
            features: &m.features,
            train_rows: m.train_rows,
            data_digest: m.data_digest.as_deref(),
            trained_at: &m.trained_at,
            tool_version: &m.tool_version,
            threshold: model.threshold(),
            metrics: m.metrics.as_ref(),
        },
    };
    if a.json {
        crate::project::out_json(&shown)?;
        return Ok(());
    }
    outln!("digest     {}", info.digest)?;
    outln!("size       {} bytes", info.size)?;
    outln!("stored     {}", short_time(&info.stored_at))?;
    outln!("releases   {}", join_tags(&releases))?;
    outln!("model      {} ({} trees)", m.model, m.n_trees)?;
    outln!("features   {}", m.features.join(", "))?;
    outln!("trained    {} on {} rows", m.trained_at, m.train_rows)?;
    outln!(
        "threshold  {:.4} ({})",
        model.threshold().value,
        model.threshold().method
    )?;
    match &m.metrics {
        Some(t) => {
            let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
            outln!(
                "metrics    accuracy {:.4} · ROC AUC {} · PR AUC {} · log loss {:.4} · F1 {:.4}",
                t.accuracy,
                fmt(t.roc_auc),
                fmt(t.pr_auc),
                t.log_loss,
                t.f1
            )?;
        }
        None => outln!("metrics    none recorded")?,
    }
    Ok(())
}

async fn verify(a: &VerifyArgs) -> Outcome {
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let report = registry.verify().await.map_err(registry_error)?;
    let now = jiff::Timestamp::now();
    // A release naming an artifact that is gone cannot be deployed either.
    let present: std::collections::BTreeSet<Digest> = registry
        .list_artifacts()
        .await
        .map_err(registry_error)?
        .into_iter()
        .map(|a| a.digest)
        .collect();
    let dangling: Vec<(ReleaseTag, Digest)> = releases_by_digest(&registry)
        .await?
        .into_iter()
        .filter(|(d, _)| !present.contains(d))
        .flat_map(|(d, tags)| tags.into_iter().map(move |t| (t, d.clone())))
        .collect();
    if a.json {
        let doc = serde_json::json!({
            "checked": report.checked,
            "corrupt": report.corrupt,
            "missing": dangling
                .iter()
                .map(|(t, d)| serde_json::json!({"release": t, "model_digest": d}))
                .collect::<Vec<_>>(),
            "interrupted": leftovers(&report.interrupted, now),
        });
        crate::project::out_json(&doc)?;
    } else {
        // Leftovers never make a read fail, so they warn without failing verify.
        if !report.interrupted.is_empty() {
            eprintln!(
                "warning: {} leftover(s) of interrupted writes (harmless to readers):",
                report.interrupted.len()
            );
            for w in &report.interrupted {
                eprintln!("  {}", describe(w, now));
            }
            eprintln!(
                "  run `predict-buy registry gc` to remove those older than an hour (`--dry-run` to see which)"
            );
        }
        for c in &report.corrupt {
            eprintln!(
                "corrupt  {}: expected {}, its content hashes to {}",
                c.object, c.expected, c.actual
            );
        }
        for (tag, digest) in &dangling {
            eprintln!("missing  release {tag} names {digest}, which is not stored");
        }
    }
    if report.corrupt.is_empty() && dangling.is_empty() {
        if !a.json {
            outln!(
                "{} artifacts verified in {}",
                report.checked,
                registry.describe()
            )?;
        }
        return Ok(());
    }
    let mut parts = Vec::new();
    if !report.corrupt.is_empty() {
        let names: Vec<&str> = report.corrupt.iter().map(|c| c.object.as_str()).collect();
        parts.push(format!(
            "{} of {} artifacts are corrupt: {}",
            report.corrupt.len(),
            report.checked,
            names.join(", ")
        ));
    }
    if !dangling.is_empty() {
        let names: Vec<String> = dangling
            .iter()
            .map(|(tag, d)| format!("{tag} ({d})"))
            .collect();
        parts.push(format!(
            "{} release(s) name a missing artifact: {}",
            dangling.len(),
            names.join(", ")
        ));
    }
    Err(CliError::failed(anyhow!(
        "registry {}: {}",
        registry.describe(),
        parts.join("; ")
    ))
    .with_hint("push the original artifact files again: a push replaces a damaged or missing copy"))
}
