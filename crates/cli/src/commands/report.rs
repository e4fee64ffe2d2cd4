//! `predict-buy report`: the HTML model report of a model file or a release, or the
//! comparison of several on the same rows.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use predict_buy_data::Table;
use predict_buy_model::Model;
use predict_buy_registry::ReleaseTag;
use predict_buy_report::{ReleaseInfo, Report, ReportError, Subject};

use crate::commands::evaluate::load_model;
use crate::commands::registry::open_existing;
use crate::project::outln;
use crate::registry_url::{RegistryArg, registry_error, runtime};
use crate::{CliError, Outcome};

#[derive(Args)]
pub struct ReportArgs {
    /// Releases from the registry: one to report on, two or more to compare.
    #[arg(value_name = "TAG")]
    pub tags: Vec<String>,
    /// A model artifact file (repeat it to compare files).
    #[arg(long, value_name = "PATH")]
    pub model: Vec<PathBuf>,
    /// Draw everything on this labelled CSV (the training schema) instead of the test
    /// rows the artifact recorded; needed for models trained before reports, and to
    /// compare models tested on different rows.
    #[arg(long, value_name = "CSV")]
    pub evaluate: Option<PathBuf>,
    /// The HTML file to write (atomically). Default: `report-<TAG>.html`,
    /// `report-<A>-vs-<B>.html` for a comparison, or `report-<model file stem>.html`,
    /// in the current folder.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArg,
}

struct Loaded {
    label: String,
    model: Model,
    release: Option<ReleaseInfo>,
}

pub fn run(a: ReportArgs) -> Outcome {
    if a.tags.is_empty() && a.model.is_empty() {
        return Err(CliError::usage("give a release tag or --model PATH")
            .with_hint("`predict-buy report v1.2.0`, `predict-buy report v1.2.0 v1.3.0` or `predict-buy report --model models/model.pbm`"));
    }
    let mut loaded = Vec::new();
    for path in &a.model {
        loaded.push(Loaded {
            label: path.display().to_string(),
            model: load_model(path)?,
            release: None,
        });
    }
    if !a.tags.is_empty() {
        loaded.extend(load_releases(&a.tags, a.registry.registry.as_deref())?);
    }
    let evaluate = a.evaluate.as_deref().map(Table::from_path).transpose()?;
    let subjects: Vec<Subject<'_>> = loaded
        .iter()
        .map(|l| Subject {
            label: l.label.clone(),
            model: &l.model,
            release: l.release.clone(),
        })
        .collect();
    let report = Report::build(&subjects, evaluate.as_ref()).map_err(report_error)?;
    let html = report.to_html().map_err(report_error)?;
    let out = a.out.clone().unwrap_or_else(|| default_out(&loaded));
    crate::project::write_atomic(&out, html.as_bytes())?;
    outln!("report     {}", out.display())?;
    outln!("models     {}", loaded.len())?;
    outln!("rows       {}", report.rows_source)
}

/// `report-v1.2.0.html`, `report-v1.2.0-vs-v1.3.0.html`, `report-model.html`.
pub fn default_out(loaded: &[impl AsRef<str>]) -> PathBuf {
    let names: Vec<String> = loaded
        .iter()
        .map(|l| {
            let label = l.as_ref();
            let stem = Path::new(label)
                .file_stem()
                .map_or_else(|| label.to_string(), |s| s.to_string_lossy().into_owned());
            // A tag keeps its dots; a file keeps only its stem.
            let name = if ReleaseTag::parse(label).is_ok() {
                label.to_string()
            } else {
                stem
            };
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        })
        .collect();
    PathBuf::from(format!("report-{}.html", names.join("-vs-")))
}

impl AsRef<str> for Loaded {
    fn as_ref(&self) -> &str {
        &self.label
    }
}

fn load_releases(tags: &[String], registry: Option<&str>) -> Result<Vec<Loaded>, CliError> {
    let tags = tags
        .iter()
        .map(|t| ReleaseTag::parse(t).map_err(registry_error))
        .collect::<Result<Vec<_>, _>>()?;
    runtime()?.block_on(async {
        let registry = open_existing(registry).await?;
        let mut out = Vec::with_capacity(tags.len());
        for tag in tags {
            let record = registry.get_release(&tag).await.map_err(registry_error)?;
            let bytes = registry
                .pull(&record.model_digest)
                .await
                .map_err(registry_error)?;
            let model = Model::from_bytes(&bytes)
                .with_context(|| {
                    format!(
                        "release {tag}: artifact {} is not a loadable model",
                        record.model_digest
                    )
                })
                .map_err(CliError::input)?;
            out.push(Loaded {
                label: tag.to_string(),
                model,
                release: Some(ReleaseInfo {
                    tag: tag.to_string(),
                    git_commit: record.git_commit.clone(),
                    created_at: Some(record.created_at.to_string()),
                }),
            });
        }
        Ok(out)
    })
}

/// Missing test rows and mismatched files are the caller's to fix (2); a chart that
/// cannot be drawn is ours (1).
fn report_error(e: ReportError) -> CliError {
    match e {
        ReportError::NoTestEvaluation { .. } | ReportError::DifferentTestRows { .. } => {
            CliError::input(e).with_hint(
                "`predict-buy report … --evaluate data/test.csv` scores the models on labelled rows",
            )
        }
        ReportError::Evaluate { .. } => CliError::input(e).with_hint(
            "--evaluate needs a labelled CSV with the model's input columns and its target, as training read them",
        ),
        ReportError::CorruptEvaluation { .. } | ReportError::NoModels => CliError::input(e),
        ReportError::Plot { .. } => CliError::failed(e),
    }
}

/// The commit HEAD points at, `-dirty` when tracked files have changes; `None` outside
/// a git work tree or without git.
pub fn head_commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let out = git(&["rev-parse", "--verify", "HEAD"])?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if commit.is_empty() {
        return None;
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

#[cfg(test)]
mod tests {
    use super::default_out;

    #[test]
    fn default_names() {
        assert_eq!(
            default_out(&["v1.2.0"]).to_str(),
            Some("report-v1.2.0.html")
        );
        assert_eq!(
            default_out(&["v1.2.0", "v1.3.0"]).to_str(),
            Some("report-v1.2.0-vs-v1.3.0.html")
        );
        assert_eq!(
            default_out(&["models/model.pbm"]).to_str(),
            Some("report-model.html")
        );
    }
}
