//! The charts, drawn by plotters' SVG backend into strings that the page inlines.

use plotters::coord::Shift;
use plotters::prelude::*;
use predict_buy_model::ThresholdPoint;
use predict_buy_model::insight::{FieldImportance, PartialDependence};

use crate::{Entry, Report, ReportError};

const WIDTH: u32 = 560;
const HEIGHT: u32 = 400;
/// Points per drawn curve: finer than the chart's pixels, small enough for the page.
const CURVE_POINTS: usize = 600;
const FONT: &str = "sans-serif";

/// One colour per compared model; the first model is always blue.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

pub(crate) fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A dashed reference line per model (chance, the share of buyers).
type Reference = dyn Fn(&Entry<'_>) -> Vec<(f64, f64)>;
/// One score of a threshold point (precision, recall, F1).
type Score = fn(&ThresholdPoint) -> f64;
type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Draws one chart into an SVG string.
fn svg(
    chart: &str,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<String, ReportError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let result = root
            .fill(&WHITE)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| Box::new(e) as _));
        result.map_err(|source| ReportError::Plot {
            chart: chart.to_string(),
            source,
        })?;
    }
    Ok(out)
}

/// At most [`CURVE_POINTS`] of `points`, always keeping both ends.
fn thin<T: Copy>(points: &[T]) -> Vec<T> {
    if points.len() <= CURVE_POINTS {
        return points.to_vec();
    }
    let step = points.len().div_ceil(CURVE_POINTS);
    let mut out: Vec<T> = points.iter().step_by(step).copied().collect();
    if !(points.len() - 1).is_multiple_of(step) {
        out.push(points[points.len() - 1]);
    }
    out
}

fn legend_line(c: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
}

/// A curve through the threshold sweep of each model, with its chosen threshold marked.
fn sweep_chart(
    report: &Report<'_>,
    name: &str,
    x_desc: &str,
    y_desc: &str,
    point: fn(&ThresholdPoint) -> (f64, f64),
    reference: Option<&Reference>,
) -> Result<String, ReportError> {
    svg(name, (WIDTH, HEIGHT), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(name, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, e) in report.entries.iter().enumerate() {
            let c = colour(i);
            if let Some(reference) = reference {
                chart.draw_series(DashedLineSeries::new(
                    reference(e),
                    4,
                    4,
                    c.mix(0.5).stroke_width(1),
                ))?;
            }
            let sweep = e.evaluation.scores.sweep();
            let pts: Vec<(f64, f64)> = thin(&sweep).iter().map(point).collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
                .label(e.subject.label.clone())
                .legend(legend_line(c));
            let chosen = e.evaluation.scores.at(e.metrics.threshold);
            let (x, y) = point(&chosen);
            chart
                .draw_series(std::iter::once(Circle::new((x, y), 6, c.filled())))?
                .label(format!("threshold {:.4}", e.metrics.threshold))
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .draw()?;
        Ok(())
    })
}

pub(crate) fn roc(report: &Report<'_>) -> Result<String, ReportError> {
    let chance = |_: &Entry<'_>| vec![(0.0, 0.0), (1.0, 1.0)];
    sweep_chart(
        report,
        "ROC curve",
        "False positive rate",
        "True positive rate (recall)",
        |p| (p.fpr(), p.recall()),
        Some(&chance),
    )
}

pub(crate) fn precision_recall(report: &Report<'_>) -> Result<String, ReportError> {
    // A model that guesses scores the share of positives at every recall.
    let prevalence = |e: &Entry<'_>| {
        let share = e.metrics.positives as f64 / e.metrics.rows.max(1) as f64;
        vec![(0.0, share), (1.0, share)]
    };
    sweep_chart(
        report,
        "Precision–recall curve",
        "Recall",
        "Precision",
        |p| (p.recall(), p.precision()),
        Some(&prevalence),
    )
}

pub(crate) fn calibration(report: &Report<'_>) -> Result<String, ReportError> {
    svg("calibration", (WIDTH, HEIGHT), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Calibration (reliability diagram)", (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("Mean predicted probability")
            .y_desc("Fraction of buyers")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                4,
                4,
                BLACK.mix(0.4).stroke_width(1),
            ))?
            .label("perfectly calibrated")
            .legend(legend_line(RGBColor(150, 150, 150)));
        for (i, e) in report.entries.iter().enumerate() {
            let c = colour(i);
            let bins = e.evaluation.scores.calibration(10);
            let pts: Vec<(f64, f64)> = bins
                .iter()
                .map(|b| (b.mean_predicted, b.fraction_positive))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(format!(
                    "{} (Brier {:.4})",
                    e.subject.label, e.evaluation.brier
                ))
                .legend(legend_line(c));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .draw()?;
        Ok(())
    })
}

/// Precision, recall and F1 of one model against the threshold, its threshold marked.
pub(crate) fn thresholds(e: &Entry<'_>, title: &str) -> Result<String, ReportError> {
    svg("threshold", (WIDTH, HEIGHT), |root| {
        let sweep = e.evaluation.scores.sweep();
        // Scores of a rare-event model crowd low; the axis ends just past the highest.
        let top = e
            .evaluation
            .scores
            .score
            .last()
            .copied()
            .unwrap_or(1.0)
            .max(e.metrics.threshold)
            .mul_add(1.05, 0.01)
            .min(1.0);
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..top, 0f64..1.02f64)?;
        chart
            .configure_mesh()
            .x_desc("Threshold (predict a buyer when p ≥ threshold)")
            .y_desc("Score")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let points: Vec<ThresholdPoint> = thin(&sweep[1..])
            .into_iter()
            .filter(|p| p.threshold <= top)
            .collect();
        let series: [(&str, RGBColor, Score); 3] = [
            ("precision", colour(0), ThresholdPoint::precision),
            ("recall", colour(1), ThresholdPoint::recall),
            ("F1", colour(2), ThresholdPoint::f1),
        ];
        for (name, c, f) in series {
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.threshold, f(p))),
                    c.stroke_width(2),
                ))?
                .label(name)
                .legend(legend_line(c));
        }
        let t = e.metrics.threshold;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(t, 0.0), (t, 1.0)],
                5,
                4,
                BLACK.stroke_width(1),
            ))?
            .label(format!("chosen threshold {t:.4}"))
            .legend(legend_line(BLACK));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .draw()?;
        Ok(())
    })
}

/// Horizontal bars, largest first.
pub(crate) fn importance(
    title: &str,
    x_desc: &str,
    values: &[FieldImportance],
    c: RGBColor,
) -> Result<String, ReportError> {
    let n = values.len().max(1);
    let height = (80 + 34 * n as u32).max(220);
    svg("importance", (WIDTH, height), |root| {
        let lo = values.iter().map(|v| v.value).fold(0.0, f64::min);
        let hi = values.iter().map(|v| v.value).fold(0.0, f64::max);
        let span = (hi - lo).max(1e-9);
        let names: Vec<String> = values.iter().map(|v| v.field.clone()).collect();
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(130)
            .build_cartesian_2d(lo..hi + 0.05 * span, (0..n as i32).into_segmented())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| (n - 1).checked_sub(i))
                    .and_then(|k| names.get(k))
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            // The largest sits on top: rows are numbered from the bottom.
            let row = (n - 1 - i) as i32;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (v.value, SegmentValue::Exact(row + 1)),
                ],
                c.filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))?;
        Ok(())
    })
}

/// The mean probability as one field sweeps its grid, one line per model that has it.
pub(crate) fn dependence(report: &Report<'_>, field: &str) -> Result<String, ReportError> {
    let curves: Vec<(usize, &str, &PartialDependence)> = report
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            e.evaluation
                .partial_dependence
                .iter()
                .find(|p| p.field == field)
                .map(|p| (i, e.subject.label.as_str(), p))
        })
        .collect();
    svg("partial dependence", (WIDTH, 320), |root| {
        let xs = curves
            .iter()
            .flat_map(|(_, _, p)| p.points.iter().map(|q| q.x));
        let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        let (x_lo, x_hi) = if x_lo.is_finite() && x_hi > x_lo {
            (x_lo, x_hi)
        } else if x_lo.is_finite() {
            (x_lo - 0.5, x_lo + 0.5)
        } else {
            (0.0, 1.0)
        };
        let y_hi = curves
            .iter()
            .flat_map(|(_, _, p)| p.points.iter().map(|q| q.mean_probability))
            .fold(0.0, f64::max);
        let y_hi = (y_hi * 1.15).clamp(0.01, 1.0);
        let labels: Vec<String> = curves
            .first()
            .map(|(_, _, p)| p.points.iter().map(|q| q.label.clone()).collect())
            .unwrap_or_default();
        let numeric = curves.first().is_none_or(|(_, _, p)| p.numeric);
        let pad = if numeric { 0.0 } else { 0.5 };
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Partial dependence on {field}"), (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(x_lo - pad..x_hi + pad, 0f64..y_hi)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(field)
            .y_desc("Mean probability")
            .light_line_style(WHITE.mix(0.0));
        let category = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        if !numeric {
            mesh.x_labels(labels.len() * 2 + 1)
                .x_label_formatter(&category);
        }
        mesh.draw()?;
        for (i, label, p) in &curves {
            let c = colour(*i);
            let pts: Vec<(f64, f64)> = p.points.iter().map(|q| (q.x, q.mean_probability)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(label.to_string())
                .legend(legend_line(c));
            chart.draw_series(pts.into_iter().map(|q| Circle::new(q, 3, c.filled())))?;
        }
        if report.entries.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font((FONT, 13))
                .draw()?;
        }
        Ok(())
    })
}
