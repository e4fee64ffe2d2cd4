//! `predict-buy predict`: predictions for the rows of a CSV or the objects of a JSON
//! file, optionally carrying columns such as an id through so results join back.

use std::path::{Path, PathBuf};

use clap::Args;
use predict_buy_data::Table;
use predict_buy_model::{Model, Prediction};
use serde_json::{Map, Value};

use crate::commands::evaluate::load_model;
use crate::error::IoError;
use crate::project::{out, write_atomic};
use crate::{CliError, Outcome};

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// A CSV with a header, a JSON array of objects, or one JSON object.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the predictions (JSON for JSON input, CSV for CSV input);
    /// stdout when absent.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Copy these input columns (or JSON fields) into each prediction, e.g. an id to
    /// join results back on. Repeat the flag or separate names with commas.
    #[arg(long, value_name = "COLUMN", value_delimiter = ',')]
    pub keep: Vec<String>,
}

pub fn run(a: PredictArgs) -> Outcome {
    let model = load_model(&a.model)?;
    let bytes = std::fs::read(&a.input).map_err(IoError::read(&a.input))?;
    let name = a.input.display().to_string();
    let keep: Vec<&str> = a
        .keep
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect();
    let out_bytes = if is_json(&a.input, &bytes) {
        predict_json(&model, &bytes, &name, &keep)?
    } else {
        let table = Table::from_reader(bytes.as_slice(), &name)?;
        predict_csv(&model, &table, &keep)?
    };
    match a.output {
        Some(path) => write_atomic(&path, &out_bytes),
        None => out(&out_bytes),
    }
}

/// JSON by its first character, or by its name when there is no first character (an
/// empty `.json` file deserves a JSON message, not a CSV one).
fn is_json(path: &Path, bytes: &[u8]) -> bool {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b) => matches!(b, b'[' | b'{'),
        None => path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json")),
    }
}

fn predict_json(
    model: &Model,
    bytes: &[u8],
    name: &str,
    keep: &[&str],
) -> Result<Vec<u8>, CliError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CliError::usage(format!(
            "{name} is empty: expected a JSON object or an array of JSON objects"
        )));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CliError::input(anyhow::Error::new(e).context(format!("{name} is not valid JSON")))
    })?;
    let records = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(CliError::usage(format!(
                "{name} holds an empty JSON array: there is nothing to predict"
            )));
        }
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => {
            return Err(CliError::usage(format!(
                "{name}: expected a JSON object or an array of JSON objects"
            )));
        }
    };
    let mut answers = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let obj = r
            .as_object()
            .ok_or_else(|| CliError::usage(format!("{name}: item {i} is not a JSON object")))?;
        let p = model.predict_json(obj).map_err(|errs| {
            let detail: Vec<String> = errs
                .iter()
                .map(|e| format!("`{}`: {}", e.field, e.reason))
                .collect();
            CliError::usage(format!("{name}: item {i}: {}", detail.join("; ")))
        })?;
        let mut answer = Map::new();
        for k in keep {
            let v = obj.get(*k).ok_or_else(|| {
                CliError::usage(format!("{name}: item {i} has no field `{k}` to --keep"))
            })?;
            answer.insert((*k).to_string(), v.clone());
        }
        answer.insert("predicted_class".into(), p.predicted_class.into());
        answer.insert("probability".into(), p.probability.into());
        answers.push(Value::Object(answer));
    }
    let mut s = serde_json::to_string_pretty(&answers).map_err(CliError::failed)?;
    s.push('\n');
    Ok(s.into_bytes())
}

fn predict_csv(model: &Model, table: &Table, keep: &[&str]) -> Result<Vec<u8>, CliError> {
    let kept: Vec<usize> = keep
        .iter()
        .map(|k| {
            table.column_index(k).ok_or_else(|| {
                CliError::usage(format!(
                    "--keep `{k}`: {} has no such column (it has {})",
                    table.source_name(),
                    table.headers().join(", ")
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let preds: Vec<Prediction> = model.predict_table(table)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = keep
        .iter()
        .copied()
        .chain(["predicted_class", "probability"]);
    w.write_record(header).map_err(CliError::failed)?;
    for (row, p) in preds.iter().enumerate() {
        let class = p.predicted_class.to_string();
        let probability = p.probability.to_string();
        let record = kept
            .iter()
            .map(|&c| table.cell(row, c))
            .chain([class.as_str(), probability.as_str()]);
        w.write_record(record).map_err(CliError::failed)?;
    }
    w.into_inner()
        .map_err(|e| CliError::failed(anyhow::anyhow!("cannot encode CSV: {}", e.error())))
}
