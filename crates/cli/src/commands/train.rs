//! `predict-buy train`: fit a model from a config and write its artifact and report.
//! `data.train_path`/`data.test_path` may name a file, a pointer file written by
//! `data push`, or a data digest; the artifact records the digest of each file read.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Args;
use predict_buy_data::{DataSource, Table};
use predict_buy_model::{DataFile, Model, TrainConfig, TrainReport, TrainRequest};
use predict_buy_registry::{DataPointer, Digest, Registry};
use sha2::{Digest as _, Sha256};

use crate::error::IoError;
use crate::progress::Bars;
use crate::project::{now_rfc3339, out_json, outln, write_atomic_with};
use crate::registry_url::{RegistryArg, registry_error, runtime};
use crate::{CliError, Outcome};
use predict_buy_model::Progress;

#[derive(Args)]
pub struct TrainArgs {
    /// Training config (YAML); the built-in default when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to write the artifact; `<model.store_path>/model.pbm` when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// The registry that data digests and pointer files are read from.
    #[command(flatten)]
    pub registry: RegistryArg,
}

pub fn run(a: TrainArgs) -> Outcome {
    let out = train(&a)?;
    if a.json {
        out_json(&out.report)
    } else {
        print_report(&out.report, &out.path)
    }
}

pub struct Trained {
    pub report: TrainReport,
    pub path: PathBuf,
}

pub fn load_config(path: Option<&Path>) -> Result<TrainConfig, CliError> {
    let (text, name) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| IoError::Config {
                path: p.to_path_buf(),
                source,
            })?,
            p.display().to_string(),
        ),
        None => (
            predict_buy_model::DEFAULT_CONFIG_YAML.to_string(),
            "the built-in default config".to_string(),
        ),
    };
    serde_yaml_ng::from_str(&text).map_err(|e| CliError::input(anyhow::anyhow!("{name}: {e}")))
}

/// Data paths are relative to the current folder, as in the original pipeline; when a
/// file is not there, the config's own folder is tried.
fn resolve(path: &Path, config: Option<&Path>) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    match config.and_then(Path::parent) {
        Some(dir) if dir.join(path).exists() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// The tables training reads and what the artifact records about each file.
pub struct LoadedData {
    pub train: Table,
    pub test: Option<Table>,
    pub files: Vec<DataFile>,
    /// The artifact's single `data_digest` (the training file's), kept for readers
    /// that predate per-file digests.
    pub data_digest: Option<String>,
}

/// Opens the registry only when a data path needs it, and once.
struct LazyRegistry<'a> {
    flag: Option<&'a str>,
    open: Option<(tokio::runtime::Runtime, Registry)>,
}

impl LazyRegistry<'_> {
    fn get(&mut self) -> Result<&(tokio::runtime::Runtime, Registry), CliError> {
        if self.open.is_none() {
            let rt = runtime()?;
            let registry = rt.block_on(crate::commands::registry::open_existing(self.flag))?;
            self.open = Some((rt, registry));
        }
        Ok(self.open.as_ref().expect("opened above"))
    }

    /// A data object's bytes, digest-checked by the registry.
    fn read(&mut self, digest: &Digest, key: &str) -> Result<Vec<u8>, CliError> {
        let (rt, registry) = self.get()?;
        rt.block_on(registry.read_data(digest))
            .map_err(|e| registry_error(e).context(format!("config key `{key}`")))
    }
}

/// One configured data file: a path, a pointer (its local copy when that matches,
/// else the registry's) or a digest (the registry's).
fn load_one(
    configured: &Path,
    key: &str,
    role: &str,
    config: Option<&Path>,
    registry: &mut LazyRegistry<'_>,
) -> Result<(Table, DataFile), CliError> {
    let (bytes, digest, name) = match DataSource::of(configured) {
        DataSource::File(p) => {
            let path = resolve(p, config);
            if !path.exists() && key == "data.test_path" {
                let e = CliError::usage(format!(
                    "config key `data.test_path`: {} does not exist",
                    path.display()
                ));
                return Err(missing_data_hint(e, &path, config));
            }
            let bytes = std::fs::read(&path)
                .map_err(IoError::read(&path))
                .map_err(|e| missing_data_hint(e.into(), &path, config))?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            (bytes, digest, file_name(&path))
        }
        DataSource::Digest(text) => {
            let digest = Digest::parse(text).map_err(registry_error)?;
            let bytes = registry.read(&digest, key)?;
            (bytes, digest.to_string(), digest.to_string())
        }
        DataSource::Pointer(p) => {
            let path = resolve(p, config);
            let pointer = DataPointer::read(&path)
                .map_err(|e| registry_error(e).context(format!("config key `{key}`")))?;
            let local = pointer.data_path(&path);
            // A local copy with the right bytes saves a download; anything else there
            // (missing, edited) is not what the pointer names, so the registry's is used.
            let bytes = match std::fs::read(&local) {
                Ok(bytes) if Digest::of(&bytes) == pointer.digest => bytes,
                _ => registry.read(&pointer.digest, key)?,
            };
            (bytes, pointer.digest.to_string(), pointer.name.clone())
        }
    };
    let size = bytes.len() as u64;
    let table = Table::from_bytes(&bytes, &name)?;
    Ok((
        table,
        DataFile {
            role: role.to_string(),
            digest,
            size,
            name,
        },
    ))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Reads the training (and test) data a config names, wherever it lives.
pub fn load_data(
    config: &TrainConfig,
    config_path: Option<&Path>,
    registry_flag: Option<&str>,
) -> Result<LoadedData, CliError> {
    let mut registry = LazyRegistry {
        flag: registry_flag,
        open: None,
    };
    let train_path = config
        .data
        .train_path
        .as_deref()
        .ok_or_else(|| CliError::usage("config key `data.train_path` is required"))?;
    let (train, train_file) = load_one(
        train_path,
        "data.train_path",
        "train",
        config_path,
        &mut registry,
    )?;
    let mut files = vec![train_file];
    let test = match config.data.test_path.as_deref() {
        Some(p) => {
            let (table, file) = load_one(p, "data.test_path", "test", config_path, &mut registry)?;
            files.push(file);
            Some(table)
        }
        None => None,
    };
    let data_digest = files.first().map(|f| f.digest.clone());
    Ok(LoadedData {
        train,
        test,
        files,
        data_digest,
    })
}

/// Trains on loaded data: the artifact records each file's digest, the config and
/// the tool version. `trained_at` and `git_commit` are parameters so `release
/// reproduce` can give the original's (the only inputs that are not the data, the
/// config or the code). The report's digest is the model's; [`train`] takes it from
/// the bytes it writes instead.
pub fn fit(
    config: &TrainConfig,
    data: &LoadedData,
    trained_at: String,
    git_commit: Option<String>,
    bars: &Bars,
) -> Result<(Model, TrainReport), CliError> {
    let outcome = predict_buy_model::train(
        &TrainRequest {
            config,
            train: &data.train,
            test: data.test.as_ref(),
            data_digest: data.data_digest.clone(),
            trained_at,
            tool_version: TOOL_VERSION.to_string(),
            git_commit,
        },
        bars,
    )?;
    let model = outcome
        .model
        .with_data_files(data.files.clone())
        .map_err(|e| CliError::failed(anyhow!(e).context("recording the data files")))?;
    Ok((model, outcome.report))
}

/// The version every artifact this build trains records.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The built-in config trains on `data/train.csv`: on a fresh folder that file is
/// missing, and the next step is to make it.
fn missing_data_hint(e: CliError, path: &Path, config: Option<&Path>) -> CliError {
    if config.is_none() && !path.exists() {
        e.with_hint(format!(
            "make synthetic data with `predict-buy data synth --out {}`, or pass --config FILE naming your data",
            path.parent().map_or(".".into(), |p| p.display().to_string())
        ))
    } else {
        e
    }
}

pub fn train(a: &TrainArgs) -> Result<Trained, CliError> {
    let config = load_config(a.config.as_deref())?;
    let bars = Bars::new();
    bars.stage("reading data");
    let data = load_data(&config, a.config.as_deref(), a.registry.registry.as_deref())?;
    let commit = crate::commands::report::head_commit();
    let (model, mut report) = fit(&config, &data, now_rfc3339(), commit, &bars)?;
    bars.stage("writing the artifact");
    let path = a
        .out
        .clone()
        .unwrap_or_else(|| config.model.store_path.join("model.pbm"));
    // Streamed to the file as it is produced (a full-depth model is megabytes), and
    // the digest is of exactly those bytes.
    let mut digest = String::new();
    write_atomic_with(&path, |f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        digest = model.write_to(&mut w)?.to_string();
        Ok(())
    })?;
    report.digest = digest;
    Ok(Trained { report, path })
}

fn print_report(r: &TrainReport, path: &Path) -> Outcome {
    let t = &r.test;
    outln!(
        "model      {} ({} trees) in {:.2}s",
        r.model,
        r.n_trees,
        r.fit_seconds
    )?;
    outln!("artifact   {} ({})", path.display(), r.digest)?;
    outln!(
        "rows       train {} · validation {} · test {} · outliers dropped {}",
        r.train_rows,
        r.validation_rows,
        r.test_rows,
        r.dropped_outliers
    )?;
    if let Some(s) = &r.smote {
        outln!(
            "SMOTE      {} synthetic rows ({} minority vs {} majority)",
            s.synthetic,
            s.minority_before,
            s.majority
        )?;
    }
    outln!("threshold  {:.4} — {}", r.threshold.value, r.threshold.note)?;
    outln!("calibrated {}", r.calibration.note)?;
    print_eval(t)
}

pub fn print_eval(t: &predict_buy_model::EvalReport) -> Outcome {
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    outln!(
        "test       accuracy {:.4} · ROC AUC {} · PR AUC {} · log loss {:.4}",
        t.accuracy,
        fmt(t.roc_auc),
        fmt(t.pr_auc),
        t.log_loss
    )?;
    outln!()?;
    outln!("              precision    recall  f1-score   support")?;
    let c = &t.classification_report;
    for (name, s) in [
        ("0", &c.negative),
        ("1", &c.positive),
        ("macro avg", &c.macro_avg),
        ("weighted avg", &c.weighted_avg),
    ] {
        outln!(
            "{name:>12}  {:>9.4} {:>9.4} {:>9.4} {:>9}",
            s.precision,
            s.recall,
            s.f1,
            s.support
        )?;
    }
    let [[tn, fp], [fn_, tp]] = t.confusion_matrix;
    outln!()?;
    outln!("confusion matrix (rows: true 0/1, columns: predicted 0/1)")?;
    outln!("  {tn:>9} {fp:>9}\n  {fn_:>9} {tp:>9}")
}
