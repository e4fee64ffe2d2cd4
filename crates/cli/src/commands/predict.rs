use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use predict_buy_data::Table;
use predict_buy_model::Prediction;
use serde_json::Value;

use crate::commands::evaluate::load_model;
use crate::project::write_atomic;
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
}

pub fn run(a: PredictArgs) -> Outcome {
    let model = load_model(&a.model)?;
    let bytes = std::fs::read(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))
        .map_err(CliError::input)?;
    let name = a.input.display().to_string();
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let out = if matches!(first, Some(b'[') | Some(b'{')) {
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| CliError::input(anyhow::anyhow!("{name}: invalid JSON: {e}")))?;
        let records = match value {
            Value::Array(items) => items,
            obj @ Value::Object(_) => vec![obj],
            _ => unreachable!("starts with [ or {{"),
        };
        let mut answers = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let obj = r.as_object().ok_or_else(|| {
                CliError::input(anyhow::anyhow!("{name}: item {i} is not a JSON object"))
            })?;
            let p = model.predict_json(obj).map_err(|errs| {
                let detail: Vec<String> = errs
                    .iter()
                    .map(|e| format!("`{}`: {}", e.field, e.reason))
                    .collect();
                CliError::input(anyhow::anyhow!("{name}: item {i}: {}", detail.join("; ")))
            })?;
            answers.push(answer(&p));
        }
        let mut s = serde_json::to_string_pretty(&answers).expect("serialisable");
        s.push('\n');
        s.into_bytes()
    } else {
        let table = Table::from_reader(bytes.as_slice(), &name).map_err(CliError::input)?;
        let preds = model.predict_table(&table).map_err(CliError::input)?;
        let mut s = String::from("predicted_class,probability\n");
        for p in preds {
            s.push_str(&format!("{},{}\n", p.predicted_class, p.probability));
        }
        s.into_bytes()
    };
    match a.output {
        Some(path) => write_atomic(&path, &out)?,
        None => std::io::stdout()
            .write_all(&out)
            .context("cannot write to stdout")?,
    }
    Ok(())
}

fn answer(p: &Prediction) -> Value {
    serde_json::json!({ "predicted_class": p.predicted_class, "probability": p.probability })
}
