//! The report's numbers as tables: the page prints them beside the plots, and tests
//! snapshot them (the numbers, not the pixels).

use predict_buy_model::{ClassBalance, Metadata};
use serde::Serialize;

use crate::{Entry, Report};

/// One table of the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// The HTML id of the table, stable across reports.
    pub id: String,
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Said under the table (why something is missing, how a value was chosen).
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tables {
    pub rows_source: String,
    pub tables: Vec<Table>,
}

pub(crate) fn build(report: &Report<'_>) -> Tables {
    let mut tables = vec![provenance(report), metrics(report)];
    for (i, e) in report.entries.iter().enumerate() {
        let suffix = suffix(report, i);
        tables.push(data_summary(e, &suffix));
        tables.push(cleaning(e, &suffix));
        tables.push(confusion(e, &suffix));
        tables.push(gain(e, &suffix));
        tables.push(permutation(e, &suffix));
    }
    Tables {
        rows_source: report.rows_source.clone(),
        tables,
    }
}

/// Tables of one model are told apart by its label when a report compares several.
pub(crate) fn suffix(report: &Report<'_>, i: usize) -> String {
    if report.entries.len() == 1 {
        String::new()
    } else {
        format!(" — {}", report.entries[i].subject.label)
    }
}

fn id(base: &str, suffix: &str, e: &Entry<'_>) -> String {
    if suffix.is_empty() {
        base.to_string()
    } else {
        let slug: String = e
            .subject
            .label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{base}-{slug}")
    }
}

pub(crate) fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "—".into()
    }
}

fn pct(part: usize, whole: usize) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), num)
}

fn header(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

fn provenance(report: &Report<'_>) -> Table {
    let mut head = vec!["".to_string()];
    head.extend(report.entries.iter().map(|e| e.subject.label.clone()));
    let field = |name: &str, f: &dyn Fn(&Entry<'_>, &Metadata) -> String| {
        let mut row = vec![name.to_string()];
        row.extend(
            report
                .entries
                .iter()
                .map(|e| f(e, e.subject.model.metadata())),
        );
        row
    };
    let rows = vec![
        field("release", &|e, _| {
            e.subject
                .release
                .as_ref()
                .map_or_else(|| "— (a model file)".into(), |r| r.tag.clone())
        }),
        field("model digest", &|e, _| e.subject.model.digest().to_string()),
        field("git commit", &|e, m| {
            m.git_commit
                .clone()
                .or_else(|| e.subject.release.as_ref()?.git_commit.clone())
                .unwrap_or_else(|| "— (not recorded)".into())
        }),
        field("tool version", &|_, m| m.tool_version.clone()),
        field("trained at", &|_, m| m.trained_at.clone()),
        field("data digest", &|_, m| {
            m.data_digest.clone().unwrap_or_else(|| "—".into())
        }),
        field("learner", &|_, m| m.model.clone()),
        field("trees", &|_, m| m.n_trees.to_string()),
        field("encoded features", &|_, m| m.features.len().to_string()),
        field("threshold rule", &|e, _| {
            let t = e.subject.model.threshold();
            format!("{} — {}", t.method, t.note)
        }),
        field("probabilities", &|e, _| {
            e.subject.model.payload().calibration.note.clone()
        }),
    ];
    Table {
        id: "provenance".into(),
        title: "Model and provenance".into(),
        header: head,
        rows,
        note: None,
    }
}

fn metrics(report: &Report<'_>) -> Table {
    let mut head = vec!["metric".to_string()];
    head.extend(report.entries.iter().map(|e| e.subject.label.clone()));
    let row = |name: &str, f: &dyn Fn(&Entry<'_>) -> String| {
        let mut r = vec![name.to_string()];
        r.extend(report.entries.iter().map(f));
        r
    };
    Table {
        id: "metrics".into(),
        title: "Metrics".into(),
        header: head,
        rows: vec![
            row("rows", &|e| e.metrics.rows.to_string()),
            row("positives", &|e| {
                format!(
                    "{} ({})",
                    e.metrics.positives,
                    pct(e.metrics.positives, e.metrics.rows)
                )
            }),
            row("threshold", &|e| num(e.metrics.threshold)),
            row("accuracy", &|e| num(e.metrics.accuracy)),
            row("ROC AUC", &|e| opt(e.metrics.roc_auc)),
            row("PR AUC (average precision)", &|e| opt(e.metrics.pr_auc)),
            row("log loss", &|e| num(e.metrics.log_loss)),
            row("Brier score", &|e| num(e.evaluation.brier)),
            row("precision", &|e| num(e.metrics.precision)),
            row("recall", &|e| num(e.metrics.recall)),
            row("F1", &|e| num(e.metrics.f1)),
        ],
        note: Some(format!("Scored on {}.", report.rows_source)),
    }
}

fn balance_row(name: &str, b: &ClassBalance) -> Vec<String> {
    vec![
        name.to_string(),
        b.rows().to_string(),
        b.negatives.to_string(),
        b.positives.to_string(),
        pct(b.positives, b.rows()),
    ]
}

fn data_summary(e: &Entry<'_>, suffix: &str) -> Table {
    let head = header(&["rows", "total", "class 0", "class 1", "share of class 1"]);
    let Some(s) = &e.subject.model.metadata().summary else {
        return Table {
            id: id("data", suffix, e),
            title: format!("Data{suffix}"),
            header: head,
            rows: Vec::new(),
            note: Some(
                "Not recorded: the model was trained before predict-buy kept a data summary. Retrain it to see rows, class balance and cleaning.".into(),
            ),
        };
    };
    let after = if s.fit_after_smote == s.fit_before_smote {
        "fitted on, after resampling (none configured)"
    } else {
        "fitted on, after SMOTE"
    };
    Table {
        id: id("data", suffix, e),
        title: format!("Data{suffix}"),
        header: head,
        rows: vec![
            vec![
                "training file".into(),
                s.rows_read.to_string(),
                String::new(),
                String::new(),
                String::new(),
            ],
            vec![
                "dropped as outliers".into(),
                s.dropped_outliers.to_string(),
                String::new(),
                String::new(),
                String::new(),
            ],
            balance_row("fitted on, before resampling", &s.fit_before_smote),
            balance_row(after, &s.fit_after_smote),
            balance_row("validation (threshold, early stopping)", &s.validation),
            balance_row("test", &s.test),
        ],
        note: Some(format!("Test rows: {}.", s.test_source)),
    }
}

fn cleaning(e: &Entry<'_>, suffix: &str) -> Table {
    let head = header(&[
        "column",
        "type",
        "missing",
        "missing rate",
        "imputed with",
        "fill value",
        "outlier bounds",
        "outliers",
    ]);
    let Some(s) = &e.subject.model.metadata().summary else {
        return Table {
            id: id("cleaning", suffix, e),
            title: format!("Columns and cleaning{suffix}"),
            header: head,
            rows: Vec::new(),
            note: Some("Not recorded for this model.".into()),
        };
    };
    let c = &s.cleaning;
    Table {
        id: id("cleaning", suffix, e),
        title: format!("Columns and cleaning{suffix}"),
        header: head,
        rows: c
            .columns
            .iter()
            .map(|col| {
                vec![
                    col.name.clone(),
                    col.kind.clone(),
                    col.missing.to_string(),
                    format!("{:.1}%", 100.0 * col.missing_rate),
                    col.imputed_with.clone(),
                    col.fill_value.clone(),
                    col.outlier_bounds
                        .map_or_else(|| "—".into(), |b| format!("[{:.2}, {:.2}]", b.low, b.high)),
                    col.outliers.to_string(),
                ]
            })
            .collect(),
        note: Some(if c.dropped_columns.is_empty() {
            format!("{} rows of the training file.", c.rows)
        } else {
            format!(
                "{} rows of the training file. Not used by the model: {}.",
                c.rows,
                c.dropped_columns.join(", ")
            )
        }),
    }
}

fn confusion(e: &Entry<'_>, suffix: &str) -> Table {
    let [[tn, fp], [fn_, tp]] = e.metrics.confusion_matrix;
    Table {
        id: id("confusion", suffix, e),
        title: format!(
            "Confusion matrix at threshold {}{suffix}",
            num(e.metrics.threshold)
        ),
        header: header(&["actual \\ predicted", "0 (no buy)", "1 (buys)"]),
        rows: vec![
            vec!["0 (no buy)".into(), tn.to_string(), fp.to_string()],
            vec!["1 (buys)".into(), fn_.to_string(), tp.to_string()],
        ],
        note: None,
    }
}

fn gain(e: &Entry<'_>, suffix: &str) -> Table {
    let gain = &e.subject.model.metadata().gain;
    let total: f64 = gain.iter().map(|g| g.value).sum();
    Table {
        id: id("gain", suffix, e),
        title: format!("Feature importance: total gain{suffix}"),
        header: header(&["field", "total gain", "share"]),
        rows: gain
            .iter()
            .map(|g| {
                vec![
                    g.field.clone(),
                    num(g.value),
                    if total > 0.0 {
                        format!("{:.1}%", 100.0 * g.value / total)
                    } else {
                        "—".into()
                    },
                ]
            })
            .collect(),
        note: Some(if gain.is_empty() {
            "Not recorded: the model was trained before predict-buy kept the trees' gain.".into()
        } else {
            "Each split's gain, replayed on the rows the trees were fitted on, summed per field (one-hot columns count for their field).".into()
        }),
    }
}

fn permutation(e: &Entry<'_>, suffix: &str) -> Table {
    Table {
        id: id("permutation", suffix, e),
        title: format!("Feature importance: permutation{suffix}"),
        header: header(&["field", "ROC AUC drop", "± std"]),
        rows: e
            .evaluation
            .permutation
            .iter()
            .map(|p| vec![p.field.clone(), num(p.value), num(p.std)])
            .collect(),
        note: Some(
            "How much ROC AUC falls when the field's values are shuffled across the rows (mean of 3 shuffles).".into(),
        ),
    }
}
