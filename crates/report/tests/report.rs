//! The report end to end on small trained models: every plot drawn (SVG elements, labelled
//! axes, no NaN), the data tables snapshotted, and the bad inputs refused with a hint.

use predict_buy_data::Table as DataTable;
use predict_buy_model::{Model, SmoteSetting, TrainConfig, TrainRequest, train};
use predict_buy_report::{Report, ReportError, Subject};
use quick_xml::events::Event;
use sha2::Digest as _;

fn tables(rows: usize, seed: u64) -> (DataTable, DataTable) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    predict_buy_data::synth::write_split(seed, rows, 0.25, &mut a, &mut b).unwrap();
    (
        DataTable::from_reader(a.as_slice(), "train.csv").unwrap(),
        DataTable::from_reader(b.as_slice(), "test.csv").unwrap(),
    )
}

fn trained(yaml_model: &str, train_t: &DataTable, test_t: &DataTable) -> Model {
    trained_with(yaml_model, None, train_t, test_t)
}

fn trained_with(
    yaml_model: &str,
    smote: Option<SmoteSetting>,
    train_t: &DataTable,
    test_t: &DataTable,
) -> Model {
    let mut cfg: TrainConfig =
        serde_yaml_ng::from_str(predict_buy_model::DEFAULT_CONFIG_YAML).unwrap();
    cfg.model = serde_yaml_ng::from_str(yaml_model).unwrap();
    cfg.train.smote = smote;
    train(
        &TrainRequest {
            config: &cfg,
            train: train_t,
            test: Some(test_t),
            data_digest: Some("sha256:data".into()),
            trained_at: "2026-01-01T00:00:00Z".into(),
            tool_version: "test".into(),
            git_commit: Some("0123456789abcdef".into()),
        },
        &predict_buy_model::Quiet,
    )
    .unwrap()
    .model
}

const BOOSTING: &str =
    "{name: GradientBoostingClassifier, params: {n_estimators: 20, max_depth: 4, random_state: 1}}";
const FOREST: &str =
    "{name: RandomForestClassifier, params: {n_estimators: 10, max_depth: 6, random_state: 1}}";

/// What a person checks on each plot of the page.
#[derive(Debug, Default)]
struct Plot {
    id: String,
    numeric_labels: usize,
    curves: usize,
    dots: usize,
    rects: usize,
}

/// Parses the page as XML and describes each `<figure class="plot">`; also returns
/// every text node, so tests can look for NaN.
fn read_plots(html: &str) -> (Vec<Plot>, String) {
    let mut reader = quick_xml::Reader::from_str(html);
    let mut plots: Vec<Plot> = Vec::new();
    let mut in_plot = false;
    let mut in_text = false;
    let mut all_text = String::new();
    loop {
        let event = reader.read_event().unwrap_or_else(|e| {
            panic!(
                "the page is not well-formed at {}: {e}",
                reader.buffer_position()
            )
        });
        match event {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let attr = |key: &str| {
                    e.attributes()
                        .filter_map(Result::ok)
                        .find(|a| a.key.as_ref() == key.as_bytes())
                        .map(|a| String::from_utf8(a.value.to_vec()).unwrap())
                };
                if name == "figure" && attr("class").as_deref() == Some("plot") {
                    in_plot = true;
                    plots.push(Plot {
                        id: attr("id").unwrap(),
                        ..Plot::default()
                    });
                }
                if !in_plot {
                    continue;
                }
                let plot = plots.last_mut().unwrap();
                match name.as_str() {
                    "text" => in_text = true,
                    "polyline" => {
                        let points = attr("points").unwrap_or_default();
                        if points.split_whitespace().count() >= 3 {
                            plot.curves += 1;
                        }
                    }
                    "circle" => plot.dots += 1,
                    "rect" => plot.rects += 1,
                    _ => {}
                }
            }
            Event::Text(t) => {
                let text = t.decode().unwrap().into_owned();
                all_text.push_str(&text);
                all_text.push('\n');
                if in_plot && in_text && text.trim().parse::<f64>().is_ok() {
                    plots.last_mut().unwrap().numeric_labels += 1;
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"figure" => in_plot = false,
                b"text" => in_text = false,
                _ => {}
            },
            _ => {}
        }
    }
    (plots, all_text)
}

fn assert_every_plot_drawn(html: &str, expected: &[&str]) {
    let (plots, text) = read_plots(html);
    let ids: Vec<&str> = plots.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, expected);
    for p in &plots {
        // Two labelled axes carry numbers; a chart with no data has nothing else.
        assert!(p.numeric_labels >= 4, "{p:?} has bare axes");
        // A curve, markers, or bars beyond the background and the legend box.
        assert!(
            p.curves >= 1 || p.dots >= 2 || p.rects >= 3,
            "{p:?} draws no data"
        );
    }
    for bad in ["NaN", "inf"] {
        assert!(!text.contains(bad), "the page says {bad}");
    }
    assert!(!html.contains("<script"), "the page must carry no scripts");
    assert!(!html.contains("src=\""), "the page must load nothing");
}

#[test]
fn one_model_report_draws_every_plot_and_snapshots_its_tables() {
    let (tr, te) = tables(5_000, 11);
    let model = trained_with(BOOSTING, Some(SmoteSetting::Enabled(true)), &tr, &te);
    let report = Report::build(&[Subject::new("model.pbm", &model)], None).unwrap();
    let html = report.to_html().unwrap();
    if let Some(path) = std::env::var_os("PREDICT_BUY_REPORT_SAMPLE") {
        std::fs::write(path, &html).unwrap();
    }
    assert_every_plot_drawn(
        &html,
        &[
            "plot-roc",
            "plot-pr",
            "plot-calibration",
            "plot-threshold-0",
            "plot-gain-0",
            "plot-permutation-0",
            "plot-dependence-0",
            "plot-dependence-1",
            "plot-dependence-2",
            "plot-dependence-3",
        ],
    );
    // The confusion matrix on the page is the one training measured.
    let [[tn, fp], [fn_, tp]] = model.metadata().metrics.as_ref().unwrap().confusion_matrix;
    let tables = report.tables();
    let confusion = tables.tables.iter().find(|t| t.id == "confusion").unwrap();
    assert_eq!(
        confusion.rows,
        [
            ["0 (no buy)".to_string(), tn.to_string(), fp.to_string()],
            ["1 (buys)".to_string(), fn_.to_string(), tp.to_string()]
        ]
    );
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[digest]");
    settings.bind(|| insta::assert_json_snapshot!("one_model_tables", tables));
    // SMOTE balanced the fitted rows; the page says so beside the raw balance.
    let data = tables.tables.iter().find(|t| t.id == "data").unwrap();
    let before = &data.rows[2];
    let after = &data.rows[3];
    assert_eq!(after[0], "fitted on, after SMOTE");
    assert_eq!(after[2], after[3], "{data:?}");
    assert_ne!(before[2], before[3]);
}

#[test]
fn two_models_compared_on_the_same_rows_overlay_their_curves() {
    let (tr, te) = tables(4_000, 12);
    let a = trained(BOOSTING, &tr, &te);
    let b = trained(FOREST, &tr, &te);
    let subjects = [Subject::new("v1.0.0", &a), Subject::new("v1.1.0", &b)];
    let report = Report::build(&subjects, Some(&te)).unwrap();
    let html = report.to_html().unwrap();
    let (plots, _) = read_plots(&html);
    let roc = plots.iter().find(|p| p.id == "plot-roc").unwrap();
    // Both models' curves, each with its chance line dashed in pieces.
    assert!(roc.curves >= 2, "{roc:?}");
    assert!(html.contains("Model comparison: v1.0.0 vs v1.1.0"));
    let metrics = report
        .tables()
        .tables
        .into_iter()
        .find(|t| t.id == "metrics")
        .unwrap();
    assert_eq!(metrics.header, ["metric", "v1.0.0", "v1.1.0"]);
    // Both scored on the same rows: the test file.
    assert_eq!(
        metrics.rows[0],
        ["rows", &te.n_rows().to_string(), &te.n_rows().to_string()]
    );
    // A threshold chart per model.
    assert!(plots.iter().any(|p| p.id == "plot-threshold-1"));
}

#[test]
fn models_tested_on_different_rows_need_evaluate_to_compare() {
    let (tr, te) = tables(3_000, 13);
    let a = trained(BOOSTING, &tr, &te);
    let (tr2, te2) = tables(3_000, 14);
    let mut cfg: TrainConfig =
        serde_yaml_ng::from_str(predict_buy_model::DEFAULT_CONFIG_YAML).unwrap();
    cfg.model = serde_yaml_ng::from_str(BOOSTING).unwrap();
    let b = train(
        &TrainRequest {
            config: &cfg,
            train: &tr2,
            test: Some(&te2),
            data_digest: Some("sha256:other".into()),
            trained_at: String::new(),
            tool_version: String::new(),
            git_commit: None,
        },
        &predict_buy_model::Quiet,
    )
    .unwrap()
    .model;
    let err = Report::build(&[Subject::new("a", &a), Subject::new("b", &b)], None).unwrap_err();
    assert!(
        matches!(err, ReportError::DifferentTestRows { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("give --evaluate DATA"), "{err}");
}

/// Re-frames an artifact whose payload JSON was edited (as an older version wrote it).
fn reframe(model: &Model, edit: impl FnOnce(&mut serde_json::Value)) -> Model {
    let bytes = model.to_bytes();
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    // Format 3: the payload's JSON, then its trees in binary, kept as they are.
    let stored = &bytes[20..20 + len];
    let mut stream = serde_json::Deserializer::from_slice(stored).into_iter::<serde_json::Value>();
    let mut payload = stream.next().unwrap().unwrap();
    let trees = &stored[stream.byte_offset()..];
    edit(&mut payload);
    let mut body = serde_json::to_vec(&payload).unwrap();
    body.extend_from_slice(trees);
    let mut out = bytes[..12].to_vec();
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Model::from_bytes(&out).unwrap()
}

#[test]
fn an_older_model_needs_evaluate_and_then_reports_what_is_missing() {
    let (tr, te) = tables(3_000, 15);
    let model = trained(BOOSTING, &tr, &te);
    let old = reframe(&model, |p| {
        let meta = p["metadata"].as_object_mut().unwrap();
        for key in ["git_commit", "summary", "gain", "test_evaluation"] {
            meta.remove(key);
        }
    });
    assert!(old.metadata().test_evaluation.is_none());
    let err = Report::build(&[Subject::new("old.pbm", &old)], None).unwrap_err();
    assert!(
        matches!(err, ReportError::NoTestEvaluation { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("give --evaluate DATA"), "{err}");

    let report = Report::build(&[Subject::new("old.pbm", &old)], Some(&te)).unwrap();
    let html = report.to_html().unwrap();
    let (plots, text) = read_plots(&html);
    // No gain was recorded, so no gain chart (and no empty one); the rest is drawn.
    assert!(!plots.iter().any(|p| p.id.starts_with("plot-gain")));
    assert!(plots.iter().any(|p| p.id == "plot-permutation-0"));
    assert!(
        text.contains("Not recorded: the model was trained before predict-buy kept a data summary")
    );
    assert!(text.contains("— (not recorded)"), "git commit");
}

#[test]
fn an_evaluation_file_without_the_models_columns_is_named() {
    let (tr, te) = tables(3_000, 16);
    let model = trained(BOOSTING, &tr, &te);
    let other = DataTable::from_reader(
        "Gender,Age,Premium,Result\nMale,30,100,1\nFemale,40,200,0\n".as_bytes(),
        "other.csv",
    )
    .unwrap();
    let err = Report::build(&[Subject::new("m", &model)], Some(&other)).unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("other.csv"), "{chain}");
    assert!(chain.contains("HasDrivingLicense"), "{chain}");
}
