//! The model report of predict-buy: one self-contained HTML file that shows what a data
//! scientist looks at — the data summary, ROC and precision–recall curves with the chosen
//! threshold marked, a calibration diagram with the Brier score, precision, recall and F1
//! against the threshold, the confusion matrix, feature importance (total gain and
//! permutation), partial dependence, and the training config and provenance — for one
//! model, or for several overlaid on the same rows.
//!
//! Plots are drawn by `plotters`' SVG backend and inlined; the page has no scripts and
//! loads nothing, so it reads the same offline, from a mail attachment or from
//! `GET /model/report`. This crate only computes and formats: it never reads files,
//! talks to a registry or a network; callers hand it models and tables.
//!
//! ```no_run
//! use predict_buy_model::Model;
//! use predict_buy_report::{Report, Subject};
//!
//! let model = Model::from_bytes(&std::fs::read("models/model.pbm")?)?;
//! let report = Report::build(&[Subject::new("model.pbm", &model)], None)?;
//! std::fs::write("report.html", report.to_html()?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod html;
mod plots;
mod tables;

use predict_buy_data::{DataError, Table as DataTable};
use predict_buy_model::insight::{Evaluation, evaluate_table};
use predict_buy_model::{EvalReport, Model};
use serde::Serialize;

pub use tables::{Table, Tables};

/// The seed of permutation importance and partial dependence on `--evaluate` rows, so
/// a report of the same model and data is the same report.
const EVALUATION_SEED: u64 = 0;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "model `{model}` has no stored test-set evaluation (it was trained before predict-buy recorded one); give --evaluate DATA with labelled rows to draw its curves"
    )]
    NoTestEvaluation { model: String },
    #[error("cannot evaluate model `{model}` on {source_name}")]
    Evaluate {
        model: String,
        source_name: String,
        // Boxed: a data error is large, and every report result carries the variant.
        #[source]
        source: Box<DataError>,
    },
    #[error(
        "models {models} were tested on different rows ({reason}); give --evaluate DATA to compare them on the same data"
    )]
    DifferentTestRows { models: String, reason: String },
    #[error("model `{model}`: its stored test scores are inconsistent (corrupt metadata)")]
    CorruptEvaluation { model: String },
    #[error("a report needs at least one model")]
    NoModels,
    #[error("cannot draw the {chart} chart")]
    Plot {
        chart: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where a model came from, when it came from a release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseInfo {
    pub tag: String,
    pub git_commit: Option<String>,
    pub created_at: Option<String>,
}

/// A model to report on, with the name the page calls it by.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub label: String,
    pub model: &'a Model,
    pub release: Option<ReleaseInfo>,
}

impl<'a> Subject<'a> {
    pub fn new(label: impl Into<String>, model: &'a Model) -> Self {
        Self {
            label: label.into(),
            model,
            release: None,
        }
    }

    pub fn with_release(mut self, release: ReleaseInfo) -> Self {
        self.release = Some(release);
        self
    }
}

/// One model's part of a report: the model and what it scored on the report's rows.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub subject: Subject<'a>,
    pub metrics: EvalReport,
    pub evaluation: Evaluation,
}

/// A report, computed and ready to render.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub entries: Vec<Entry<'a>>,
    /// What rows the curves were drawn from.
    pub rows_source: String,
}

impl<'a> Report<'a> {
    /// Builds the report of `subjects`: on `evaluate`'s rows when given, else on the
    /// test rows stored in each artifact. Several models are compared only on the same
    /// rows: stored test rows count as the same when the models were trained on the same
    /// data digest with the same held-out set.
    pub fn build(
        subjects: &[Subject<'a>],
        evaluate: Option<&DataTable>,
    ) -> Result<Self, ReportError> {
        if subjects.is_empty() {
            return Err(ReportError::NoModels);
        }
        let entries = subjects
            .iter()
            .map(|s| entry(s, evaluate))
            .collect::<Result<Vec<_>, _>>()?;
        let rows_source = match evaluate {
            Some(t) => format!("the rows of {} (--evaluate)", t.source_name()),
            None => {
                same_test_rows(&entries)?;
                let m = entries[0].subject.model.metadata();
                m.summary.as_ref().map_or_else(
                    || "the test rows held out at training".to_string(),
                    |s| format!("the test rows: {}", s.test_source),
                )
            }
        };
        Ok(Self {
            entries,
            rows_source,
        })
    }

    /// The report's data tables, as the page shows them.
    pub fn tables(&self) -> Tables {
        tables::build(self)
    }

    /// The whole page: HTML with inline SVG, no scripts, nothing loaded from elsewhere.
    pub fn to_html(&self) -> Result<String, ReportError> {
        html::render(self)
    }

    pub fn title(&self) -> String {
        let labels: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.subject.label.as_str())
            .collect();
        if labels.len() == 1 {
            format!("Model report: {}", labels[0])
        } else {
            format!("Model comparison: {}", labels.join(" vs "))
        }
    }
}

fn entry<'a>(s: &Subject<'a>, evaluate: Option<&DataTable>) -> Result<Entry<'a>, ReportError> {
    let (metrics, evaluation) = match evaluate {
        Some(table) => evaluate_table(s.model, table, EVALUATION_SEED).map_err(|source| {
            ReportError::Evaluate {
                model: s.label.clone(),
                source_name: table.source_name().to_string(),
                source: Box::new(source),
            }
        })?,
        None => {
            let meta = s.model.metadata();
            match (&meta.metrics, &meta.test_evaluation) {
                (Some(m), Some(e)) => (m.clone(), e.clone()),
                _ => {
                    return Err(ReportError::NoTestEvaluation {
                        model: s.label.clone(),
                    });
                }
            }
        }
    };
    if !evaluation.scores.is_valid() || !evaluation.brier.is_finite() {
        return Err(ReportError::CorruptEvaluation {
            model: s.label.clone(),
        });
    }
    Ok(Entry {
        subject: s.clone(),
        metrics,
        evaluation,
    })
}

/// Stored test rows are the same rows only when the data and the split agree.
fn same_test_rows(entries: &[Entry<'_>]) -> Result<(), ReportError> {
    let Some((first, rest)) = entries.split_first() else {
        return Ok(());
    };
    let key = |e: &Entry<'_>| {
        let m = e.subject.model.metadata();
        let split = m.config.get("train").map(|t| {
            (
                t.get("test_size").cloned(),
                t.get("random_state").cloned(),
                t.get("shuffle").cloned(),
            )
        });
        let test_source = m.summary.as_ref().map(|s| s.test_source.clone());
        (m.data_digest.clone(), split, test_source)
    };
    for other in rest {
        let (a, b) = (key(first), key(other));
        let reason = if a.0.is_none() || a.0 != b.0 {
            Some("their training data digests differ or are unknown")
        } else if a.1 != b.1 || a.2 != b.2 {
            Some("their held-out test sets were drawn differently")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ReportError::DifferentTestRows {
                models: format!("`{}` and `{}`", first.subject.label, other.subject.label),
                reason: reason.into(),
            });
        }
    }
    Ok(())
}
