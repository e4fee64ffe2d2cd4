//! The Grafana dashboard (`deploy/grafana/predict-buy.json`) may query only what the
//! server exports. Every PromQL expression in it is scanned for the metrics and labels
//! it names, and each one is looked up in the `/metrics` of a real server that has
//! answered good, bad and batch requests. A renamed metric then fails here instead of
//! leaving an empty panel in production.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{TestServer, sample_row};
use serde_json::{Value, json};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/predict-buy.json"
);

/// Labels Prometheus attaches to every scraped series itself.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Aggregation operators: they may take `by (…)` before their parenthesis.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a label list.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Words that are neither metrics nor functions.
const OPERATOR_WORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// What one PromQL expression names.
#[derive(Debug, Default, PartialEq)]
struct Refs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// Scans a PromQL expression (Grafana variables such as `$__rate_interval` allowed) for
/// the metric names and label names it uses. A scanner, not a parser: it does not
/// check that the expression is valid, only what it refers to.
fn references(expr: &str) -> Result<Refs, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i)?;
        } else if c == '[' {
            // A range or subquery duration: `[5m]`, `[$__rate_interval]`, `[1h:5m]`.
            i = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .map(|p| i + p + 1)
                .ok_or_else(|| format!("unclosed `[` in `{expr}`"))?;
        } else if c == '{' {
            i = matchers(&chars, i, &mut refs.labels)?;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations (`0.99`, `1e3`, `5m` after offset).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_{}".contains(chars[i]))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(&chars, i);
            if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                if next.is_some_and(|(_, c)| c == '(') {
                    i = label_list(&chars, next.unwrap().0, &mut refs.labels)?;
                }
            } else if OPERATOR_WORDS.contains(&word.as_str())
                || AGGREGATIONS.contains(&word.as_str())
                || next.is_some_and(|(_, c)| c == '(')
            {
                // A function or operator, not a series.
            } else {
                refs.metrics.insert(word);
                if let Some((at, '{')) = next {
                    i = matchers(&chars, at, &mut refs.labels)?;
                }
            }
        } else {
            i += 1;
        }
    }
    if refs.labels.contains("__name__") {
        return Err(format!(
            "`{expr}` selects metrics by `__name__`; name them so they can be checked"
        ));
    }
    Ok(refs)
}

fn next_non_space(chars: &[char], from: usize) -> Option<(usize, char)> {
    chars[from..]
        .iter()
        .position(|c| !c.is_whitespace())
        .map(|p| (from + p, chars[from + p]))
}

/// Returns the index after the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("unclosed string starting at character {start}"))
}

fn identifier(chars: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

/// Reads `{label op "value", …}` from the `{` at `open`; returns the index after `}`.
fn matchers(chars: &[char], open: usize, labels: &mut BTreeSet<String>) -> Result<usize, String> {
    let mut i = open + 1;
    loop {
        i = next_non_space(chars, i).ok_or("unclosed `{`")?.0;
        match chars[i] {
            '}' => return Ok(i + 1),
            ',' => i += 1,
            _ => {
                let (label, after) = identifier(chars, i);
                if label.is_empty() {
                    return Err(format!("expected a label name at character {i}"));
                }
                labels.insert(label);
                i = next_non_space(chars, after).ok_or("unclosed `{`")?.0;
                while i < chars.len() && "=!~".contains(chars[i]) {
                    i += 1;
                }
                i = next_non_space(chars, i).ok_or("unclosed `{`")?.0;
                if !"\"'`".contains(chars[i]) {
                    return Err(format!("expected a quoted value at character {i}"));
                }
                i = skip_string(chars, i)?;
            }
        }
    }
}

/// Reads `(label, …)` from the `(` at `open`; returns the index after `)`.
fn label_list(chars: &[char], open: usize, labels: &mut BTreeSet<String>) -> Result<usize, String> {
    let close = chars[open..]
        .iter()
        .position(|&c| c == ')')
        .map(|p| open + p)
        .ok_or("unclosed label list")?;
    let list: String = chars[open + 1..close].iter().collect();
    for label in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        labels.insert(label.to_string());
    }
    Ok(close + 1)
}

/// The series a `/metrics` scrape holds: sample name → label names, plus each
/// family's type from its `# TYPE` line.
#[derive(Debug, Default)]
struct Exported {
    samples: HashMap<String, BTreeSet<String>>,
    types: HashMap<String, String>,
}

fn parse_exposition(text: &str) -> Exported {
    let mut out = Exported::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                out.types.insert(name.to_string(), kind.trim().to_string());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let end = chars
            .iter()
            .position(|&c| c == '{' || c == ' ')
            .unwrap_or(chars.len());
        let name: String = chars[..end].iter().collect();
        let mut labels = BTreeSet::new();
        if chars.get(end) == Some(&'{') {
            matchers(&chars, end, &mut labels)
                .unwrap_or_else(|e| panic!("/metrics line `{line}` does not parse: {e}"));
        }
        out.samples.entry(name).or_default().extend(labels);
    }
    out
}

/// Every PromQL query of the dashboard with where it is: panel targets, annotations
/// and `label_values(…)` template variables (as their selector and label).
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect(dashboard, "dashboard", &mut out);
    out
}

fn collect(v: &Value, place: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let place = match map.get("title").or_else(|| map.get("name")) {
                Some(Value::String(t)) => format!("{place} › {t}"),
                _ => place.to_string(),
            };
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push((place.clone(), expr.clone()));
            }
            if map.get("type") == Some(&json!("query")) {
                let query = match map.get("query") {
                    Some(Value::String(q)) => Some(q.clone()),
                    Some(Value::Object(q)) => {
                        q.get("query").and_then(Value::as_str).map(str::to_string)
                    }
                    _ => None,
                };
                if let Some(q) = query {
                    out.push((place.clone(), q));
                }
            }
            for (key, child) in map {
                if key != "expr" && key != "query" {
                    collect(child, &place, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect(item, place, out)),
        _ => {}
    }
}

/// What one query refers to: template variables' `label_values(selector, label)` is
/// Grafana's, not PromQL, so it is taken apart here.
fn query_references(query: &str) -> Result<Refs, String> {
    let trimmed = query.trim();
    let Some(inner) = trimmed
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    else {
        return references(trimmed);
    };
    let (selector, label) = match inner.rsplit_once(',') {
        Some((selector, label)) => (Some(selector), label.trim()),
        None => (None, inner.trim()),
    };
    let mut refs = match selector {
        Some(s) => references(s)?,
        None => Refs::default(),
    };
    if refs.metrics.is_empty() {
        return Err(format!(
            "`{query}` lists a label over every metric; name the metric so it can be checked"
        ));
    }
    refs.labels.insert(label.to_string());
    Ok(refs)
}

/// One line per metric or label a query names that the scrape does not hold, each
/// naming the query and where it is.
fn problems(dashboard: &Value, exported: &Exported) -> Vec<String> {
    let mut out = Vec::new();
    for (place, query) in queries(dashboard) {
        let refs = match query_references(&query) {
            Ok(refs) => refs,
            Err(e) => {
                out.push(format!("{place}: `{query}`: {e}"));
                continue;
            }
        };
        let mut known_labels: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        for metric in &refs.metrics {
            match exported.samples.get(metric) {
                Some(labels) => known_labels.extend(labels.iter().map(String::as_str)),
                None => {
                    let why = match exported.types.get(metric).map(String::as_str) {
                        Some("histogram") => format!(
                            "is a histogram, whose series are `{metric}_bucket`, `{metric}_sum` and `{metric}_count`"
                        ),
                        _ => "is not exported by /metrics".to_string(),
                    };
                    out.push(format!("{place}: `{query}`: metric `{metric}` {why}"));
                }
            }
        }
        for label in &refs.labels {
            if !known_labels.contains(label.as_str()) {
                out.push(format!(
                    "{place}: `{query}`: label `{label}` is on none of {:?}",
                    refs.metrics
                ));
            }
        }
    }
    out
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD)
        .unwrap_or_else(|e| panic!("cannot read {DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// A real server after one of each kind of request the dashboard has a panel for.
async fn scrape_after_traffic() -> Exported {
    let s = TestServer::start().await;
    assert_eq!(s.get("/healthz").await.0, 200);
    assert_eq!(s.get("/readyz").await.0, 200);
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    let (status, _) = s.post_json("/predict", &json!({"Age": "old"})).await;
    assert_eq!(status, 422, "a bad request is refused");
    let (status, body) = s
        .post_json(
            "/predict/batch",
            &json!({"instances": [sample_row(), sample_row()]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.get("/no/such/route").await.0, 404);
    let (status, text) = s.get("/metrics").await;
    assert_eq!(status, 200);
    let text = text
        .as_str()
        .expect("/metrics is text, not JSON")
        .to_string();
    s.stop().await;
    parse_exposition(&text)
}

#[tokio::test]
async fn every_dashboard_query_names_only_exported_metrics_and_labels() {
    let exported = scrape_after_traffic().await;
    // The traffic above must have produced the series the error panels rely on.
    let requests = &exported.samples["http_requests_total"];
    assert!(
        requests.contains("route") && requests.contains("status"),
        "{requests:?}"
    );
    assert!(
        exported
            .samples
            .contains_key("http_request_duration_seconds_bucket")
    );

    let dashboard = dashboard();
    assert!(
        queries(&dashboard).len() >= 10,
        "the dashboard has its panels"
    );
    let found = problems(&dashboard, &exported);
    assert!(
        found.is_empty(),
        "{DASHBOARD} queries what /metrics does not export:\n{}",
        found.join("\n")
    );

    // The checker itself must be able to fail: a misspelt metric, a bare histogram
    // name and an unknown label are each reported with their expression.
    let broken = json!({"panels": [{"title": "broken", "targets": [
        {"expr": "sum(rate(http_request_total[5m]))"},
        {"expr": "histogram_quantile(0.9, rate(http_request_duration_seconds[5m]))"},
        {"expr": "sum by (path) (rate(http_requests_total[5m]))"},
    ]}]});
    let found = problems(&broken, &exported);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].contains("`sum(rate(http_request_total[5m]))`")
            && found[0].contains("metric `http_request_total` is not exported"),
        "{}",
        found[0]
    );
    assert!(
        found[1].contains("`http_request_duration_seconds` is a histogram"),
        "{}",
        found[1]
    );
    assert!(
        found[2].contains("label `path`") && found[2].contains("broken"),
        "{}",
        found[2]
    );
}

#[test]
fn the_dashboard_shows_every_golden_signal() {
    let mut named = BTreeSet::new();
    for (place, query) in queries(&dashboard()) {
        let refs = query_references(&query).unwrap_or_else(|e| panic!("{place}: {e}"));
        named.extend(refs.metrics);
    }
    for needed in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_requests_in_flight",
        "http_requests_shed_total",
        "predictions_total",
        "model_reloads_total",
        "model_info",
    ] {
        assert!(
            named.contains(needed),
            "no panel queries `{needed}`: {named:?}"
        );
    }
}

#[test]
fn the_scanner_finds_metrics_and_labels_not_functions_or_variables() {
    let refs = references(
        r#"histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket{instance=~"$instance", route!="/metrics"}[$__rate_interval])))
        / on (route) group_left sum without (status) (rate(http_requests_total{status=~"5..|4\"x"}[5m] offset 1h)) > bool 0.5"#,
    )
    .unwrap();
    assert_eq!(
        refs.metrics.into_iter().collect::<Vec<_>>(),
        [
            "http_request_duration_seconds_bucket",
            "http_requests_total"
        ]
    );
    assert_eq!(
        refs.labels.into_iter().collect::<Vec<_>>(),
        ["instance", "le", "route", "status"]
    );

    let refs =
        references("sum(model_info) by (release) and count(predictions_total == 1)").unwrap();
    assert_eq!(
        refs.metrics.into_iter().collect::<Vec<_>>(),
        ["model_info", "predictions_total"]
    );
    assert_eq!(refs.labels.into_iter().collect::<Vec<_>>(), ["release"]);

    assert!(
        references(r#"{__name__=~"http_.*"}"#)
            .unwrap_err()
            .contains("__name__")
    );
    assert!(
        references(r#"up{job="x}"#).is_err(),
        "an unclosed string is an error"
    );

    let refs = query_references("label_values(model_info{release!=\"\"}, instance)").unwrap();
    assert_eq!(refs.metrics.into_iter().collect::<Vec<_>>(), ["model_info"]);
    assert_eq!(
        refs.labels.into_iter().collect::<Vec<_>>(),
        ["instance", "release"]
    );
    assert!(query_references("label_values(instance)").is_err());
}

#[test]
fn exposition_lines_give_sample_names_and_labels() {
    let exported = parse_exposition(
        "# HELP h Time\n# TYPE h histogram\nh_bucket{route=\"/a,b}\",le=\"0.5\"} 1\nh_sum{route=\"/\"} 2\nc 3\n",
    );
    assert_eq!(exported.types["h"], "histogram");
    assert_eq!(
        exported.samples["h_bucket"].iter().collect::<Vec<_>>(),
        ["le", "route"]
    );
    assert!(exported.samples["c"].is_empty());
    assert!(!exported.samples.contains_key("h"));
}
