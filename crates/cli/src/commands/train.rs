use std::path::{Path, PathBuf};

use clap::Args;
use predict_buy_data::Table;
use predict_buy_model::{TrainConfig, TrainReport, TrainRequest};
use sha2::{Digest as _, Sha256};

use crate::error::IoError;
use crate::progress::Bars;
use crate::project::{now_rfc3339, out_json, outln, write_atomic};
use crate::{CliError, Outcome};

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

fn read_table(path: &Path) -> Result<(Table, String), CliError> {
    let bytes = std::fs::read(path).map_err(IoError::read(path))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let table = Table::from_reader(bytes.as_slice(), &path.display().to_string())?;
    Ok((table, digest))
}

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
    let train_path = config
        .data
        .train_path
        .as_deref()
        .map(|p| resolve(p, a.config.as_deref()))
        .ok_or_else(|| CliError::usage("config key `data.train_path` is required"))?;
    let (train_table, digest) = read_table(&train_path)
        .map_err(|e| missing_data_hint(e, &train_path, a.config.as_deref()))?;
    let test_path = config
        .data
        .test_path
        .as_deref()
        .map(|p| resolve(p, a.config.as_deref()));
    let test_table = match &test_path {
        Some(p) if p.exists() => Some(read_table(p)?.0),
        Some(p) => {
            let e = CliError::usage(format!(
                "config key `data.test_path`: {} does not exist",
                p.display()
            ));
            return Err(missing_data_hint(e, p, a.config.as_deref()));
        }
        None => None,
    };
    let bars = Bars::new();
    let outcome = predict_buy_model::train(
        &TrainRequest {
            config: &config,
            train: &train_table,
            test: test_table.as_ref(),
            data_digest: Some(digest),
            trained_at: now_rfc3339(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: crate::commands::report::head_commit(),
        },
        &bars,
    );
    bars.finish();
    let outcome = outcome?;
    let path = a
        .out
        .clone()
        .unwrap_or_else(|| config.model.store_path.join("model.pbm"));
    write_atomic(&path, &outcome.model.to_bytes())?;
    Ok(Trained {
        report: outcome.report,
        path,
    })
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
