//! `predict-buy predict`: predictions for the rows of a CSV or the objects of a JSON
//! file, optionally carrying columns such as an id through so results join back, and
//! with `--explain` each input field's contribution to the score.

use std::path::{Path, PathBuf};

use clap::Args;
use predict_buy_data::Table;
use predict_buy_model::{ExplainFailure, Explanation, Model, Prediction, Units};
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
    /// Also explain each prediction (exact TreeSHAP): the model's base value, its
    /// score, and each input field's contribution, which add up to the score. JSON
    /// gets `base_value`, `score`, `units` and a `contributions` object; CSV gets
    /// `base_value`, `score` and a `contribution_<field>` column per field.
    #[arg(long)]
    pub explain: bool,
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
    if a.explain {
        // Refuse an unexplainable model before reading any row.
        model.explainer().map_err(explain_refused)?;
        eprintln!("{}", units_note(&model));
    }
    let out_bytes = if is_json(&a.input, &bytes) {
        predict_json(&model, &bytes, &name, &keep, a.explain)?
    } else {
        let table = Table::from_reader(bytes.as_slice(), &name)?;
        predict_csv(&model, &table, &keep, a.explain)?
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

/// The model predates explanations (no cover in its trees): the model, not the input,
/// is what the user must change.
fn explain_refused(e: predict_buy_model::ExplainError) -> CliError {
    CliError::input(e).with_hint("train the model again with this predict-buy, then explain")
}

/// What the explanation's numbers are, for the reader of the output.
fn units_note(model: &Model) -> &'static str {
    match model.ensemble().link {
        predict_buy_model::Link::Logit => {
            "contributions are in log-odds; base_value + contributions = score, and sigmoid(score) is the probability"
        }
        predict_buy_model::Link::Average => {
            "contributions are in probability (the trees' mean, before calibration); base_value + contributions = score"
        }
    }
}

fn units_name(u: Units) -> &'static str {
    match u {
        Units::LogOdds => "log_odds",
        Units::Probability => "probability",
    }
}

fn predict_json(
    model: &Model,
    bytes: &[u8],
    name: &str,
    keep: &[&str],
    explain: bool,
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
        let bad_fields = |errs: Vec<predict_buy_data::FieldError>| {
            let detail: Vec<String> = errs
                .iter()
                .map(|e| format!("`{}`: {}", e.field, e.reason))
                .collect();
            CliError::usage(format!("{name}: item {i}: {}", detail.join("; ")))
        };
        let (p, explanation) = if explain {
            let e = model.explain_json(obj).map_err(|f| match f {
                ExplainFailure::Fields(errs) => bad_fields(errs),
                ExplainFailure::Model(e) => explain_refused(e),
            })?;
            let p = Prediction {
                predicted_class: e.predicted_class,
                probability: e.probability,
            };
            (p, Some(e))
        } else {
            (model.predict_json(obj).map_err(bad_fields)?, None)
        };
        let mut answer = Map::new();
        for k in keep {
            let v = obj.get(*k).ok_or_else(|| {
                CliError::usage(format!("{name}: item {i} has no field `{k}` to --keep"))
            })?;
            answer.insert((*k).to_string(), v.clone());
        }
        answer.insert("predicted_class".into(), p.predicted_class.into());
        answer.insert("probability".into(), p.probability.into());
        if let Some(e) = explanation {
            answer.insert("units".into(), units_name(e.units).into());
            answer.insert("base_value".into(), e.base_value.into());
            answer.insert("score".into(), e.score.into());
            let contributions: Map<String, Value> = e
                .contributions
                .into_iter()
                .map(|(field, v)| (field, v.into()))
                .collect();
            answer.insert("contributions".into(), contributions.into());
        }
        answers.push(Value::Object(answer));
    }
    let mut s = serde_json::to_string_pretty(&answers).map_err(CliError::failed)?;
    s.push('\n');
    Ok(s.into_bytes())
}

fn predict_csv(
    model: &Model,
    table: &Table,
    keep: &[&str],
    explain: bool,
) -> Result<Vec<u8>, CliError> {
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
    let explanations: Option<Vec<Explanation>> = if explain {
        Some(model.explain_table(table).map_err(|e| match e {
            predict_buy_model::ExplainTableError::Data(d) => CliError::from(d),
            predict_buy_model::ExplainTableError::Model(m) => explain_refused(m),
        })?)
    } else {
        None
    };
    let preds: Vec<Prediction> = match &explanations {
        Some(list) => list
            .iter()
            .map(|e| Prediction {
                predicted_class: e.predicted_class,
                probability: e.probability,
            })
            .collect(),
        None => model.predict_table(table)?,
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = keep
        .iter()
        .map(|k| (*k).to_string())
        .chain(["predicted_class".into(), "probability".into()])
        .collect();
    if explain {
        header.extend(["base_value".into(), "score".into()]);
        header.extend(
            model
                .input_fields()
                .into_iter()
                .map(|f| format!("contribution_{}", f.name)),
        );
    }
    w.write_record(&header).map_err(CliError::failed)?;
    for (row, p) in preds.iter().enumerate() {
        let mut record: Vec<String> = kept
            .iter()
            .map(|&c| table.cell(row, c).to_string())
            .chain([p.predicted_class.to_string(), p.probability.to_string()])
            .collect();
        if let Some(e) = explanations.as_ref().map(|list| &list[row]) {
            record.extend([e.base_value.to_string(), e.score.to_string()]);
            record.extend(e.contributions.iter().map(|(_, v)| v.to_string()));
        }
        w.write_record(&record).map_err(CliError::failed)?;
    }
    w.into_inner()
        .map_err(|e| CliError::failed(anyhow::anyhow!("cannot encode CSV: {}", e.error())))
}
