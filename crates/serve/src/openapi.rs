//! `GET /openapi.json`, built from what this server does rather than from fixed structs:
//! the request schema comes from the loaded model's input schema (required fields,
//! ranges and categories of its cleaning rules, the JSON types the server accepts), and
//! `/admin/reload` is described only when it is enabled.
//!
//! What the server accepts and the document say the same thing, rule by rule:
//! - a numeric field takes a number within its range (the server refuses others with
//!   422), `null` (imputed), `true`/`false` (1/0, as pydantic's lax mode in the
//!   original app took them), or a string holding a number (the documented `pattern`
//!   is the plain decimal form within the range; the server also reads `£2,305.40` for
//!   money fields, and a blank string means missing);
//! - a field without a range in the model's cleaning rules takes any number: the
//!   insurance preset bounds `Age` (0–120) and `AnnualPremium` (≥ 0), and leaves
//!   `Switch`, `HasDrivingLicense` and `RegionID` unbounded, so `Switch: 7` is a
//!   documented, accepted input that the trees treat like the largest value they saw;
//! - a category field takes any string, number, boolean or `null`; the known
//!   categories are listed, and unknown ones are accepted and encoded as none of them.

use predict_buy_data::{Parse, RuleKind};
use serde_json::{Map, Value, json};
use utoipa::OpenApi as _;

use crate::routes::ApiDoc;
use crate::state::LoadedModel;

/// The document for a server with `model` loaded (or none yet) and the admin routes on
/// or off. Deterministic for a given model, so callers may cache it per model.
pub(crate) fn document(model: Option<&LoadedModel>, admin: bool, batch_limit: usize) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    if admin {
        doc["components"]["securitySchemes"] = json!({
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The token of `--admin-token-file` or `PREDICT_BUY_ADMIN_TOKEN`."
            }
        });
    } else {
        if let Some(paths) = doc["paths"].as_object_mut() {
            paths.remove("/admin/reload");
        }
        if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
            schemas.remove("ReloadResponse");
        }
    }
    if let Some(m) = model {
        doc["info"]["version"] = Value::String(m.version.clone());
        doc["components"]["schemas"]["PredictRequest"] = request_schema(m);
    }
    doc["components"]["schemas"]["BatchRequest"] = batch_schema(batch_limit);
    doc
}

/// The schema of one record, from the model's input fields.
fn request_schema(m: &LoadedModel) -> Value {
    let fields = m.model.input_fields();
    let rules = &m.model.payload().cleaner.features;
    let mut properties = Map::new();
    for f in &fields {
        let money = rules.iter().any(|r| {
            r.name == f.name
                && matches!(
                    r.kind,
                    RuleKind::Numeric {
                        parse: Parse::Currency,
                        ..
                    }
                )
        });
        let schema = match f.kind {
            "number" => number_schema(f.min, f.max, money),
            _ => category_schema(f.categories.as_deref()),
        };
        properties.insert(f.name.clone(), schema);
    }
    let mut schema = json!({
        "type": "object",
        "description": "One customer, as the original API took it. Every field of the loaded model is required; `null` means missing and is imputed; other fields are ignored.",
        "required": fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        "properties": properties,
        "additionalProperties": true,
    });
    // A golden row of the artifact is an input the model is known to answer.
    if let Some(row) = m.model.golden().first() {
        schema["example"] = Value::Object(row.input.clone());
    }
    schema
}

fn number_schema(min: Option<f64>, max: Option<f64>, money: bool) -> Value {
    let mut number = json!({"type": "number"});
    if let Some(lo) = min {
        number["minimum"] = json!(lo);
    }
    if let Some(hi) = max {
        number["maximum"] = json!(hi);
    }
    let within = |v: f64| min.is_none_or(|lo| v >= lo) && max.is_none_or(|hi| v <= hi);
    let range = match (min, max) {
        (Some(lo), Some(hi)) => format!("from {lo} to {hi}"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, Some(hi)) => format!("at most {hi}"),
        (None, None) => "any number".to_string(),
    };
    let mut one_of = vec![
        number,
        json!({"type": "string", "pattern": numeric_text_pattern(min, max, money),
        "description": if money {
            "An amount written as text: \"2305.40\", \"£2,305.40\"; blank means missing."
        } else {
            "A number written as text, e.g. \"46\" or \"46.0\"; blank means missing."
        }}),
        json!({"type": "null", "description": "Missing: imputed as in training."}),
    ];
    // Booleans are 1 and 0; where either is out of range, only the other is documented.
    match (within(0.0), within(1.0)) {
        (true, true) => {
            one_of.push(json!({"type": "boolean", "description": "true is 1, false is 0."}))
        }
        (false, true) => one_of.push(json!({"const": true, "description": "true is 1."})),
        (true, false) => one_of.push(json!({"const": false, "description": "false is 0."})),
        (false, false) => {}
    }
    json!({"description": format!("A number, {range}."), "oneOf": one_of})
}

fn category_schema(categories: Option<&[String]>) -> Value {
    let mut schema = json!({"type": ["string", "number", "boolean", "null"]});
    match categories {
        Some(known) if !known.is_empty() => {
            schema["description"] = Value::String(format!(
                "A category. Known: {}. Others are accepted and count as none of them; `null` is imputed.",
                known.join(", ")
            ));
            schema["examples"] = json!(known);
        }
        _ => {
            schema["description"] = Value::String("A category; `null` is imputed.".to_string());
        }
    }
    schema
}

/// The decimal numbers written as text that lie within `[min, max]`, or blank. A
/// regular expression cannot bound a number in general; this covers the common rules
/// (no minimum, or a minimum of at most 0, and a maximum of at least 0), and otherwise
/// documents blank text only, which is honest if incomplete.
fn numeric_text_pattern(min: Option<f64>, max: Option<f64>, money: bool) -> String {
    const BLANK: &str = r"^\s*$";
    // Money is read with its symbol and thousands separators dropped.
    let symbol = if money { r"[£$€]?" } else { "" };
    let sign = if min.is_none() {
        "-?"
    } else if min == Some(0.0) {
        ""
    } else {
        return BLANK.to_string();
    };
    let magnitude = match max {
        None if money => r"([0-9]{1,3}(,[0-9]{3}){1,4}|[0-9]{1,15})(\.[0-9]{1,6})?".to_string(),
        None => r"[0-9]{1,15}(\.[0-9]{1,6})?".to_string(),
        // Without a minimum a negative number is always within; with one, only 0 is
        // handled, so the magnitude alone decides.
        Some(hi) if (0.0..1e15).contains(&hi) => up_to(hi.floor() as u64),
        _ => return BLANK.to_string(),
    };
    format!(r"^\s*({symbol}{sign}{magnitude})?\s*$")
}

/// Decimal text for the numbers in `[0, n]`: integers below `n` with or without a
/// fraction, and `n` itself with zeros after the point only.
fn up_to(n: u64) -> String {
    let digits = n.to_string();
    let k = digits.len();
    let mut below = Vec::new();
    if k > 1 {
        below.push(format!("[0-9]{{1,{}}}", k - 1));
    }
    for (i, d) in digits.bytes().enumerate() {
        let d = d - b'0';
        if d == 0 {
            continue;
        }
        let rest = k - i - 1;
        let tail = if rest > 0 {
            format!("[0-9]{{{rest}}}")
        } else {
            String::new()
        };
        let lower = if d == 1 {
            "0".to_string()
        } else {
            format!("[0-{}]", d - 1)
        };
        below.push(format!("{}{lower}{tail}", &digits[..i]));
    }
    let exact = format!(r"{digits}(\.0{{1,6}})?");
    if below.is_empty() {
        return exact;
    }
    format!(r"(({})(\.[0-9]{{1,6}})?|{exact})", below.join("|"))
}

/// Either `{"instances": [...]}` or a bare array, each of at most `limit` records.
fn batch_schema(limit: usize) -> Value {
    let items = json!({"$ref": "#/components/schemas/PredictRequest"});
    let array = json!({"type": "array", "maxItems": limit, "items": items});
    json!({
        "description": format!("Up to {limit} records (422 beyond), as `{{\"instances\": [...]}}` or a bare array."),
        "oneOf": [
            {"type": "object", "required": ["instances"], "properties": {"instances": array.clone()}},
            array,
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(text)
    }

    #[test]
    fn up_to_covers_exactly_the_range() {
        for n in [0u64, 1, 9, 10, 12, 100, 120, 305] {
            let p = format!(r"^({})$", up_to(n));
            for v in 0..=(n + 15) {
                assert_eq!(
                    matches(&p, &v.to_string()),
                    v <= n,
                    "n={n} v={v} pattern {p}"
                );
            }
            assert!(matches(&p, &format!("{n}.0")), "n={n}");
            assert!(!matches(&p, &format!("{n}.5")), "n={n}");
            if n > 0 {
                assert!(matches(&p, &format!("{}.99", n - 1)), "n={n}");
            }
        }
    }

    #[test]
    fn text_patterns_follow_the_rule() {
        let age = numeric_text_pattern(Some(0.0), Some(120.0), false);
        assert!(matches(&age, "46"));
        assert!(matches(&age, " 46.5 "));
        assert!(matches(&age, ""));
        assert!(!matches(&age, "121"));
        assert!(!matches(&age, "-1"));
        assert!(!matches(&age, "abc"));
        assert!(!matches(&age, "£46"));
        let region = numeric_text_pattern(None, None, false);
        assert!(matches(&region, "-3.25"));
        assert!(!matches(&region, "1e5"));
        assert_eq!(numeric_text_pattern(Some(5.0), None, false), r"^\s*$");
        let premium = numeric_text_pattern(Some(0.0), None, true);
        for text in ["£1,623.85 ", "2305.4", "£131.50", "1,000,000"] {
            assert!(matches(&premium, text), "{text}");
        }
        for text in ["£-5", "1,00", "£", "12,3456"] {
            assert!(!matches(&premium, text), "{text}");
        }
    }

    #[test]
    fn booleans_are_documented_only_within_range() {
        let s = number_schema(Some(0.0), Some(120.0), false);
        let kinds: Vec<_> = s["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].clone())
            .collect();
        assert!(kinds.contains(&json!("boolean")));
        let high = number_schema(Some(18.0), None, false);
        assert!(
            !high["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["type"] == "boolean" || b.get("const").is_some())
        );
    }
}
