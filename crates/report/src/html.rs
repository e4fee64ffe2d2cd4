//! The page: sections of tables and inline SVG charts, styled inline, with no scripts.
//! The markup is also well-formed XML, so tests read it with an XML parser.

use std::fmt::Write as _;

use crate::tables::{Table, suffix};
use crate::{Report, ReportError, plots};

const STYLE: &str = "\
body{font-family:sans-serif;margin:2em auto;max-width:1180px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:.2em}\
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}td.n{text-align:right}.note{color:#555;font-size:.9em;margin:.2em 0 1em}\
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{color:#555;font-size:.9em;max-width:560px}\
pre{background:#f8f8f8;padding:.8em;overflow:auto;font-size:.85em}";

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn table(out: &mut String, t: &Table) {
    let _ = write!(out, "<h3>{}</h3>", escape(&t.title));
    if !t.rows.is_empty() {
        let _ = write!(out, "<table id=\"{}\"><thead><tr>", escape(&t.id));
        for h in &t.header {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr></thead><tbody>");
        for row in &t.rows {
            out.push_str("<tr>");
            for cell in row {
                let numeric = !cell.is_empty()
                    && cell
                        .chars()
                        .all(|c| c.is_ascii_digit() || ".-%—".contains(c));
                let class = if numeric { " class=\"n\"" } else { "" };
                let _ = write!(out, "<td{class}>{}</td>", escape(cell));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
    }
    if let Some(note) = &t.note {
        let _ = write!(out, "<p class=\"note\">{}</p>", escape(note));
    }
}

fn figure(out: &mut String, id: &str, svg: &str, caption: &str) {
    let _ = write!(
        out,
        "<figure class=\"plot\" id=\"{}\">{svg}<figcaption>{}</figcaption></figure>",
        escape(id),
        escape(caption)
    );
}

fn find<'t>(tables: &'t [Table], id: &str) -> Option<&'t Table> {
    tables.iter().find(|t| t.id == id)
}

pub(crate) fn render(report: &Report<'_>) -> Result<String, ReportError> {
    let data = report.tables();
    let tables = &data.tables;
    let by_prefix = |prefix: &str| -> Vec<&Table> {
        tables
            .iter()
            .filter(|t| t.id == prefix || t.id.starts_with(&format!("{prefix}-")))
            .collect()
    };
    let title = report.title();
    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>{}</title><style>{STYLE}</style></head><body>",
        escape(&title)
    );
    let _ = write!(
        out,
        "<h1>{}</h1><p class=\"note\">Curves and metrics are drawn from {}.</p>",
        escape(&title),
        escape(&report.rows_source)
    );

    out.push_str("<section id=\"provenance\"><h2>Model</h2>");
    if let Some(t) = find(tables, "provenance") {
        table(&mut out, t);
    }
    out.push_str("</section>");

    out.push_str("<section id=\"data\"><h2>Data</h2>");
    for t in by_prefix("data").into_iter().chain(by_prefix("cleaning")) {
        table(&mut out, t);
    }
    out.push_str("</section>");

    out.push_str("<section id=\"performance\"><h2>Performance</h2>");
    if let Some(t) = find(tables, "metrics") {
        table(&mut out, t);
    }
    out.push_str("<div class=\"plots\">");
    figure(
        &mut out,
        "plot-roc",
        &plots::roc(report)?,
        "The dot marks the chosen threshold; the dashed line is chance.",
    );
    figure(
        &mut out,
        "plot-pr",
        &plots::precision_recall(report)?,
        "The dot marks the chosen threshold; the dashed line is the share of buyers (a guess).",
    );
    figure(
        &mut out,
        "plot-calibration",
        &plots::calibration(report)?,
        "Ten equal-width bins of predicted probability; empty bins are left out.",
    );
    for (i, e) in report.entries.iter().enumerate() {
        let s = suffix(report, i);
        figure(
            &mut out,
            &format!("plot-threshold-{i}"),
            &plots::thresholds(e, &format!("Precision, recall, F1{s}"))?,
            &format!(
                "Threshold rule: {} — {}",
                e.subject.model.threshold().method,
                e.subject.model.threshold().note
            ),
        );
    }
    out.push_str("</div>");
    for t in by_prefix("confusion") {
        table(&mut out, t);
    }
    out.push_str("</section>");

    out.push_str("<section id=\"importance\"><h2>Feature importance</h2>");
    for (i, e) in report.entries.iter().enumerate() {
        let s = suffix(report, i);
        out.push_str("<div class=\"plots\">");
        let gain = &e.subject.model.metadata().gain;
        if !gain.is_empty() {
            figure(
                &mut out,
                &format!("plot-gain-{i}"),
                &plots::importance(
                    &format!("Total gain{s}"),
                    "Total gain",
                    gain,
                    plots::colour(i),
                )?,
                "Summed over every split of every tree.",
            );
        }
        if !e.evaluation.permutation.is_empty() {
            figure(
                &mut out,
                &format!("plot-permutation-{i}"),
                &plots::importance(
                    &format!("Permutation importance{s}"),
                    "ROC AUC drop when shuffled",
                    &e.evaluation.permutation,
                    plots::colour(i),
                )?,
                &format!("On {}.", report.rows_source),
            );
        }
        out.push_str("</div>");
    }
    for t in by_prefix("gain")
        .into_iter()
        .chain(by_prefix("permutation"))
    {
        table(&mut out, t);
    }
    out.push_str("</section>");

    out.push_str("<section id=\"dependence\"><h2>Partial dependence</h2><p class=\"note\">The mean predicted probability when every row's field is set to each value (the 5th to 95th percentiles for numbers), for the fields that matter most.</p><div class=\"plots\">");
    let mut fields: Vec<&str> = Vec::new();
    for e in &report.entries {
        for p in &e.evaluation.partial_dependence {
            if !fields.contains(&p.field.as_str()) && !p.points.is_empty() {
                fields.push(&p.field);
            }
        }
    }
    for (k, field) in fields.iter().enumerate() {
        figure(
            &mut out,
            &format!("plot-dependence-{k}"),
            &plots::dependence(report, field)?,
            "",
        );
    }
    out.push_str("</div></section>");

    out.push_str("<section id=\"config\"><h2>Training config</h2>");
    for (i, e) in report.entries.iter().enumerate() {
        let meta = e.subject.model.metadata();
        let doc = serde_json::json!({ "config": meta.config, "params": meta.params });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        let _ = write!(
            out,
            "<h3>Config{}</h3><pre>{}</pre>",
            escape(&suffix(report, i)),
            escape(&text)
        );
    }
    out.push_str("</section>");
    let _ = writeln!(
        out,
        "<footer class=\"note\">Written by predict-buy {}. No scripts; nothing is loaded from elsewhere.</footer></body></html>",
        escape(env!("CARGO_PKG_VERSION"))
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<1 Year & \"x\" 'y'>"),
            "&lt;1 Year &amp; &quot;x&quot; &#39;y&#39;&gt;"
        );
    }
}
