//! `predict-buy release create|list|show|reproduce`: immutable releases in the
//! registry, and the proof that one can be rebuilt from its data and config.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use predict_buy_model::Model;
use predict_buy_registry::{
    ArtifactPointer, CreateOutcome, DataRef, Digest, Error, GoldenPrediction, Registry,
    ReleaseRecord, ReleaseTag, TrainingRecord,
};
use serde::Serialize;

use crate::commands::model::ListArgs;
use crate::commands::model::{load_artifact_file, looks_like_digest, push_artifact, short_time};
use crate::commands::registry::open_existing;
use crate::project::outln;
use crate::registry_url::{RegistryArg, open_registry, registry_error, runtime};
use crate::{CliError, Outcome};

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Record an immutable release: model, image, git commit, metrics, golden predictions.
    Create(CreateArgs),
    /// Every release, in semver order.
    List(ListArgs),
    /// One release in full.
    Show(ShowArgs),
    /// Retrain a release from its data and config in the registry and check that the
    /// artifact comes out the same; prints `reproduced` or the first difference.
    Reproduce(crate::commands::reproduce::ReproduceArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// The release tag, vMAJOR.MINOR.PATCH.
    pub tag: String,
    /// An artifact file (pushed first), a pointer file, or a stored digest (or a unique
    /// prefix of at least 8 hex digits).
    #[arg(long, value_name = "PATH|DIGEST")]
    pub model: String,
    /// The container image that serves this release.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Free text stored with the release.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub notes: String,
    /// Release a model even if its training data is not in the registry (it cannot
    /// then be reproduced from the registry alone).
    #[arg(long, env = crate::project::env::ALLOW_UNVERSIONED_DATA)]
    pub allow_unversioned_data: bool,
    /// Print the stored release as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The release tag, vMAJOR.MINOR.PATCH.
    pub tag: String,
    /// Print the release as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

pub fn run(c: ReleaseCommand) -> Outcome {
    let rt = runtime()?;
    match c {
        ReleaseCommand::Create(a) => rt.block_on(create(&a)),
        ReleaseCommand::List(a) => rt.block_on(list(&a)),
        ReleaseCommand::Show(a) => rt.block_on(show(&a)),
        ReleaseCommand::Reproduce(a) => rt.block_on(crate::commands::reproduce::run(&a)),
    }
}

fn parse_tag(input: &str) -> Result<ReleaseTag, CliError> {
    ReleaseTag::parse(input).map_err(registry_error)
}

/// The artifact a release names, found without writing anything.
enum ModelSource {
    /// A local artifact file, pushed only once the release is known to be acceptable.
    File { path: PathBuf, bytes: Vec<u8> },
    /// Already stored in the registry.
    Stored,
}

/// The artifact a release names: a local file (not pushed yet), or read back from the
/// registry by pointer or digest.
async fn resolve_model(
    registry: &Registry,
    reference: &str,
) -> Result<(Digest, Model, ModelSource), CliError> {
    let path = Path::new(reference);
    if path.is_file() && !is_artifact_file(reference) {
        let pointer = ArtifactPointer::read(path).map_err(registry_error)?;
        let model = pull_model(registry, &pointer.digest).await?;
        return Ok((pointer.digest, model, ModelSource::Stored));
    }
    if is_artifact_file(reference) {
        let (bytes, model) = load_artifact_file(path)?;
        let digest = Digest::of(&bytes);
        let source = ModelSource::File {
            path: path.to_path_buf(),
            bytes,
        };
        return Ok((digest, model, source));
    }
    if !looks_like_digest(reference) {
        return Err(CliError::input(anyhow!(
            "--model `{reference}`: no such file, and not a digest (sha256:<hex> or at least 8 hex digits)"
        ))
        .with_hint("pass the artifact `predict-buy train` wrote, or a digest from `predict-buy model list`"));
    }
    let digest = registry
        .resolve_digest(reference)
        .await
        .map_err(registry_error)?;
    let model = pull_model(registry, &digest).await?;
    Ok((digest, model, ModelSource::Stored))
}

/// `--model` names a file to push rather than something already stored (a pointer
/// file or a digest).
fn is_artifact_file(reference: &str) -> bool {
    !reference.ends_with(".ref.yaml") && Path::new(reference).is_file()
}

async fn pull_model(registry: &Registry, digest: &Digest) -> Result<Model, CliError> {
    let bytes = registry.pull(digest).await.map_err(registry_error)?;
    Model::from_bytes(&bytes)
        .with_context(|| format!("artifact {digest} is not a loadable model artifact"))
        .map_err(CliError::input)
}

/// The model's answers on its own sample rows, which deploy verification compares
/// live servers against.
fn golden_predictions(model: &Model, digest: &Digest) -> Result<Vec<GoldenPrediction>, CliError> {
    model
        .golden()
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let p = model.predict_json(&row.input).map_err(|errors| {
                let why: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.reason))
                    .collect();
                CliError::failed(anyhow!(
                    "artifact {digest} cannot predict its own golden row {i}: {}",
                    why.join("; ")
                ))
            })?;
            Ok(GoldenPrediction {
                input: serde_json::Value::Object(row.input.clone()),
                predicted_class: p.predicted_class,
                probability: p.probability,
            })
        })
        .collect()
}

/// The commit HEAD points at, when run inside a git work tree.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--verify", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if commit.is_empty() {
        return None;
    }
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty {
        eprintln!(
            "warning: the work tree has uncommitted changes; the release records commit {commit}"
        );
    }
    Some(commit)
}

/// Who cut the release, as the settings layer names the actor.
fn actor() -> Result<String, CliError> {
    Ok(crate::settings::Settings::from_process()?.actor())
}

/// What `release create` is asked to record.
pub struct NewRelease<'a> {
    pub tag: ReleaseTag,
    /// An artifact file (pushed first), a pointer file, or a stored digest or prefix.
    pub model: &'a str,
    pub image: Option<String>,
    pub notes: String,
    /// Release even when the training data is not in the registry.
    pub allow_unversioned_data: bool,
}

/// What the model records about its training, with whether each data file is in the
/// registry. Artifacts from before per-file digests name only their training file.
async fn training_record(registry: &Registry, model: &Model) -> Result<TrainingRecord, CliError> {
    let meta = model.metadata();
    let mut data = Vec::new();
    for f in &meta.data_files {
        let digest = Digest::parse(&f.digest).map_err(|e| {
            CliError::input(anyhow!(e).context("the artifact records a malformed data digest"))
        })?;
        data.push(DataRef {
            role: f.role.clone(),
            digest,
            size: f.size,
            name: f.name.clone(),
        });
    }
    if data.is_empty()
        && let Some(d) = meta
            .data_digest
            .as_deref()
            .and_then(|d| Digest::parse(d).ok())
    {
        data.push(DataRef {
            role: "train".into(),
            digest: d,
            size: 0,
            name: "(training data; size not recorded)".into(),
        });
    }
    let mut in_registry = !data.is_empty();
    for d in &data {
        if !registry.has_data(&d.digest).await.map_err(registry_error)? {
            in_registry = false;
        }
    }
    Ok(TrainingRecord {
        data,
        data_in_registry: in_registry,
        config: meta.config.clone(),
        tool_version: meta.tool_version.clone(),
    })
}

/// The refusal of a release whose data cannot be found again.
fn unversioned(registry: &Registry, digest: &Digest, training: &TrainingRecord) -> CliError {
    if training.data.is_empty() {
        return CliError::input(anyhow!(
            "model {digest} records no training data digest, so its data cannot be versioned"
        ))
        .with_hint("retrain it with `predict-buy train`, or pass --allow-unversioned-data");
    }
    let names: Vec<String> = training
        .data
        .iter()
        .map(|d| format!("{} {} ({})", d.role, d.name, d.digest))
        .collect();
    CliError::input(anyhow!(
        "model {digest} was trained on data that is not in registry {}: {}",
        registry.describe(),
        names.join(", ")
    ))
    .with_hint(
        "push the same files with `predict-buy data push FILE…` (the same bytes give the same digest), or pass --allow-unversioned-data",
    )
}

/// Records a release the way `release create` does (pushing the model file if need
/// be, with git commit, metrics and golden predictions); other commands reuse it.
pub async fn create_release(
    registry: &Registry,
    new: NewRelease<'_>,
) -> Result<CreateOutcome, CliError> {
    let (digest, model, source) = resolve_model(registry, new.model).await?;
    let training = training_record(registry, &model).await?;
    if !training.data_in_registry && !new.allow_unversioned_data {
        return Err(unversioned(registry, &digest, &training));
    }
    let record = ReleaseRecord {
        training: Some(training),
        tag: new.tag,
        golden: golden_predictions(&model, &digest)?,
        metrics: serde_json::to_value(&model.metadata().metrics).map_err(CliError::failed)?,
        model_digest: digest,
        image: new.image,
        git_commit: git_commit(),
        notes: new.notes,
        created_at: jiff::Timestamp::now(),
        created_by: actor()?,
    };
    // Refuse a conflicting tag before pushing, so a refusal stores nothing. A release
    // created between this check and ours is still refused by `create_release`.
    match registry.check_new_release(&record).await {
        Ok(_) => {}
        Err(e @ Error::ReleaseExists { .. }) => return Err(conflict(registry, &record, e).await),
        Err(e) => return Err(registry_error(e)),
    }
    if let ModelSource::File { path, bytes } = source {
        push_artifact(registry, &path, bytes).await?;
    }
    match registry.create_release(&record).await {
        Ok(o) => Ok(o),
        Err(e @ Error::ReleaseExists { .. }) => Err(conflict(registry, &record, e).await),
        Err(e) => Err(registry_error(e)),
    }
}

async fn create(a: &CreateArgs) -> Outcome {
    let tag = parse_tag(&a.tag)?;
    // Only pushing a file may start a registry; a digest or a pointer names something
    // already stored, so a missing registry is reported rather than created empty.
    let registry = if is_artifact_file(&a.model) {
        open_registry(a.registry.registry.as_deref())?
    } else {
        open_existing(a.registry.registry.as_deref()).await?
    };
    let outcome = create_release(
        &registry,
        NewRelease {
            tag,
            model: &a.model,
            image: a.image.clone(),
            notes: a.notes.clone(),
            allow_unversioned_data: a.allow_unversioned_data,
        },
    )
    .await?;
    if a.json {
        crate::project::out_json(&outcome.record)?;
    }
    let r = &outcome.record;
    if outcome.created {
        eprintln!(
            "created release {} (model {}, {} golden predictions) in {}",
            r.tag,
            r.model_digest,
            r.golden.len(),
            registry.describe()
        );
    } else {
        eprintln!(
            "release {} unchanged: an identical release already exists (created {} by {})",
            r.tag,
            short_time(&r.created_at),
            r.created_by
        );
    }
    Ok(())
}

/// A refused re-creation, with the stored values of the fields that differ.
async fn conflict(registry: &Registry, new: &ReleaseRecord, e: Error) -> CliError {
    let tag = new.tag.clone();
    let mut hint = format!(
        "for new content cut a new tag (e.g. v{}.{}.{}); to see the stored release run `predict-buy release show {tag}`",
        tag.version().major,
        tag.version().minor,
        tag.version().patch + 1
    );
    if let Ok(old) = registry.get_release(&tag).await {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_string());
        let mut lines = Vec::new();
        if old.model_digest != new.model_digest {
            lines.push(format!(
                "model_digest: stored {}, given {}",
                old.model_digest, new.model_digest
            ));
        }
        if old.image != new.image {
            lines.push(format!(
                "image: stored {}, given {}",
                show(&old.image),
                show(&new.image)
            ));
        }
        if old.git_commit != new.git_commit {
            lines.push(format!(
                "git_commit: stored {}, given {}",
                show(&old.git_commit),
                show(&new.git_commit)
            ));
        }
        if old.notes != new.notes {
            lines.push(format!(
                "notes: stored {:?}, given {:?}",
                old.notes, new.notes
            ));
        }
        if !lines.is_empty() {
            hint = format!("{}\n      {hint}", lines.join("\n      "));
        }
    }
    registry_error(e).with_hint(hint)
}

/// One line of `release list`; `--json` prints these rather than whole records, whose
/// golden predictions would drown the list.
#[derive(Serialize)]
struct Listed<'a> {
    tag: &'a ReleaseTag,
    model_digest: &'a Digest,
    image: Option<&'a str>,
    git_commit: Option<&'a str>,
    created_at: &'a jiff::Timestamp,
    created_by: &'a str,
    notes: &'a str,
}

async fn list(a: &ListArgs) -> Outcome {
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let releases = registry.list_releases().await.map_err(registry_error)?;
    if a.json {
        let listed: Vec<Listed<'_>> = releases
            .iter()
            .map(|r| Listed {
                tag: &r.tag,
                model_digest: &r.model_digest,
                image: r.image.as_deref(),
                git_commit: r.git_commit.as_deref(),
                created_at: &r.created_at,
                created_by: &r.created_by,
                notes: &r.notes,
            })
            .collect();
        crate::project::out_json(&listed)?;
        return Ok(());
    }
    if releases.is_empty() {
        eprintln!("no releases in {}", registry.describe());
        return Ok(());
    }
    let width = releases
        .iter()
        .map(|r| r.tag.to_string().len())
        .max()
        .unwrap_or(0)
        .max("TAG".len());
    outln!(
        "{:<width$}  {:<12}  {:<20}  IMAGE",
        "TAG",
        "MODEL",
        "CREATED"
    )?;
    for r in &releases {
        outln!(
            "{:<width$}  {:<12}  {:<20}  {}",
            r.tag.to_string(),
            r.model_digest.short(),
            short_time(&r.created_at),
            r.image.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

async fn show(a: &ShowArgs) -> Outcome {
    let tag = parse_tag(&a.tag)?;
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let r = registry.get_release(&tag).await.map_err(registry_error)?;
    if a.json {
        crate::project::out_json(&r)?;
        return Ok(());
    }
    outln!("release    {}", r.tag)?;
    outln!("model      {}", r.model_digest)?;
    outln!("image      {}", r.image.as_deref().unwrap_or("-"))?;
    outln!("git commit {}", r.git_commit.as_deref().unwrap_or("-"))?;
    outln!(
        "created    {} by {}",
        short_time(&r.created_at),
        r.created_by
    )?;
    if !r.notes.is_empty() {
        outln!("notes      {}", r.notes)?;
    }
    let metric = |k: &str| {
        r.metrics
            .get(k)
            .and_then(serde_json::Value::as_f64)
            .map_or("n/a".to_string(), |v| format!("{v:.4}"))
    };
    if r.metrics.is_null() {
        outln!("metrics    none recorded")?;
    } else {
        outln!(
            "metrics    accuracy {} · ROC AUC {} · PR AUC {} · log loss {} · F1 {}",
            metric("accuracy"),
            metric("roc_auc"),
            metric("pr_auc"),
            metric("log_loss"),
            metric("f1")
        )?;
    }
    match &r.training {
        None => outln!("data       not recorded (released before data versioning)")?,
        Some(t) => {
            let place = if t.data_in_registry {
                "in the registry"
            } else {
                "NOT in the registry (released with --allow-unversioned-data)"
            };
            outln!("data       {} file(s), {place}", t.data.len())?;
            for d in &t.data {
                outln!(
                    "  {:<5} {}  {} ({} bytes)",
                    d.role,
                    d.digest,
                    d.name,
                    d.size
                )?;
            }
            outln!("trained by predict-buy {}", t.tool_version)?;
        }
    }
    outln!("golden     {} predictions", r.golden.len())?;
    for g in &r.golden {
        outln!(
            "  class {} p={:.6}  {}",
            g.predicted_class,
            g.probability,
            g.input
        )?;
    }
    Ok(())
}
