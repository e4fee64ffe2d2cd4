//! The HTTP contract: our 422s are valid FastAPI validation errors by the original
//! app's own OpenAPI document, and our OpenAPI document says what the server does,
//! value by value.

mod common;

use common::{Options, TOKEN, TestServer, sample_row};
use serde_json::{Value, json};

/// Enough of JSON Schema for the two documents at hand: `$ref` into
/// `#/components/schemas`, `type` (one or a list), `properties`, `required`, `items`,
/// `maxItems`, `anyOf`, `oneOf`, `const`, `minimum`, `maximum`, `pattern`.
fn valid(doc: &Value, schema: &Value, v: &Value) -> bool {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap();
        return valid(doc, &doc["components"]["schemas"][name], v);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let is = |t: &str| match t {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| is(t)) {
            return false;
        }
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return false;
    }
    if let (Some(lo), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && x < lo
    {
        return false;
    }
    if let (Some(hi), Some(x)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64())
        && x > hi
    {
        return false;
    }
    if let (Some(p), Some(s)) = (schema.get("pattern").and_then(Value::as_str), v.as_str())
        && !regex::Regex::new(p).unwrap().is_match(s)
    {
        return false;
    }
    if let Some(object) = v.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                return false;
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                if let Some(x) = object.get(k)
                    && !valid(doc, s, x)
                {
                    return false;
                }
            }
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            return false;
        }
        if let Some(s) = schema.get("items")
            && !items.iter().all(|x| valid(doc, s, x))
        {
            return false;
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| valid(doc, s, v))
    {
        return false;
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && one.iter().filter(|s| valid(doc, s, v)).count() != 1
    {
        return false;
    }
    true
}

fn original() -> Value {
    serde_json::from_str(include_str!("fixtures/fastapi-original-openapi.json")).unwrap()
}

#[test]
fn the_validator_refuses_what_it_should() {
    let doc = original();
    let error = json!({"$ref": "#/components/schemas/HTTPValidationError"});
    assert!(valid(
        &doc,
        &error,
        &json!({"detail":[{"loc":["body","Age"],"msg":"m","type":"t"}]})
    ));
    // Our old body: `field`/`reason` only.
    assert!(!valid(
        &doc,
        &error,
        &json!({"error":"invalid_input","detail":[{"field":"Age","reason":"m"}]})
    ));
    assert!(!valid(
        &doc,
        &error,
        &json!({"detail":[{"loc":[1.5],"msg":"m","type":"t"}]})
    ));
}

/// Requests the original app's document describes, valid and not, sent to our server:
/// every answer matches that document (a 422 is its `HTTPValidationError`).
#[tokio::test]
async fn answers_match_the_original_document() {
    let doc = original();
    let request = &doc["components"]["schemas"]["InsuranceData"];
    let responses = &doc["paths"]["/predict"]["post"]["responses"];
    let s = TestServer::start().await;
    let good = sample_row();
    assert!(
        valid(&doc, request, &good),
        "the sample is a valid original request"
    );
    let mut bodies = vec![good.clone()];
    for field in request["required"].as_array().unwrap() {
        let field = field.as_str().unwrap();
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove(field);
        bodies.push(missing);
        for wrong in [json!("not a number at all"), json!([1]), json!({"a": 1})] {
            let mut bad = good.clone();
            bad[field] = wrong;
            bodies.push(bad);
        }
    }
    bodies.push(json!({}));
    bodies.push(json!([good]));
    let mut refused = 0;
    for body in &bodies {
        let (status, answer) = s.post_json("/predict", body).await;
        let declared = &responses[status.to_string()];
        assert!(
            declared.is_object(),
            "{body} → {status}, which the original never answered"
        );
        let schema = &declared["content"]["application/json"]["schema"];
        assert!(
            valid(&doc, schema, &answer),
            "{body} → {status} {answer} does not match the original's schema {schema}"
        );
        if status == 422 {
            refused += 1;
            // Ours beside FastAPI's, saying the same.
            for p in answer["detail"].as_array().unwrap() {
                assert_eq!(p["msg"], p["reason"], "{answer}");
                assert_eq!(p["loc"][0], "body", "{answer}");
            }
        }
    }
    assert!(
        refused >= 20,
        "only {refused} of {} were refused",
        bodies.len()
    );
    // The location of a batch item, as FastAPI would write it.
    let (status, answer) = s
        .post_json("/predict/batch", &json!({"instances": [good, {"Age": 30}]}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        answer["detail"][0]["loc"],
        json!(["body", "instances", 1, "Gender"])
    );
    assert_eq!(answer["detail"][0]["type"], "missing");
    s.stop().await;
}

/// For each field, values the document accepts get 200 and values it refuses get 422:
/// the document is derived from the model, and the server checks the same rules.
#[tokio::test]
async fn the_document_and_the_server_agree_value_by_value() {
    let s = TestServer::start().await;
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    let request = json!({"$ref": "#/components/schemas/PredictRequest"});
    let schema = &doc["components"]["schemas"]["PredictRequest"];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let model_fields: Vec<String> = s.state.current().unwrap().fields.clone();
    assert_eq!(required, model_fields, "required fields are the model's");
    assert_eq!(schema["properties"]["Age"]["oneOf"][0]["maximum"], 120.0);
    assert!(
        valid(&doc, &request, &schema["example"]),
        "the document's example is valid by the document: {} in {}",
        schema["example"],
        schema
    );
    let values = [
        json!(7),
        json!(99),
        json!(1.5e9),
        json!(-3),
        json!(200),
        json!(120),
        json!(0),
        json!(true),
        json!(false),
        json!(null),
        json!("46"),
        json!(" 46.5 "),
        json!(""),
        json!("121"),
        json!("abc"),
        json!("Male"),
        json!([1]),
        json!({"a": 1}),
    ];
    let mut checked = 0;
    for field in &required {
        for v in &values {
            let mut body = sample_row();
            body[*field] = v.clone();
            let documented = valid(&doc, &request, &body);
            let (status, answer) = s.post_json("/predict", &body).await;
            // Text the document leaves out may still be read (e.g. "£2,305.40"): the
            // document may be narrower than the server, never wider.
            if documented || status != 200 {
                assert_eq!(
                    status == 200,
                    documented,
                    "{field} = {v}: the document says {}, the server answered {status} {answer}",
                    if documented { "accepted" } else { "refused" }
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
    // The example of the batch schema's shapes.
    let batch = json!({"$ref": "#/components/schemas/BatchRequest"});
    assert!(valid(&doc, &batch, &json!([sample_row()])));
    assert!(valid(&doc, &batch, &json!({"instances": [sample_row()]})));
    assert!(!valid(
        &doc,
        &batch,
        &json!({"instances": vec![sample_row(); 1001]})
    ));
    s.stop().await;
}

#[tokio::test]
async fn admin_routes_are_documented_only_when_enabled() {
    let with = TestServer::start().await;
    let doc = with.get("/openapi.json").await.1;
    assert!(doc["paths"]["/admin/reload"]["post"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/admin/reload"]["post"]["security"][0]["bearer"],
        json!([])
    );
    // The scheme name is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = with
            .client
            .post(with.url("/admin/reload"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    with.stop().await;

    let without = TestServer::with(Options {
        token: None,
        ..Default::default()
    })
    .await;
    let doc = without.get("/openapi.json").await.1;
    assert!(
        doc["paths"].get("/admin/reload").is_none(),
        "{}",
        doc["paths"]
    );
    assert!(doc["components"].get("securitySchemes").is_none());
    assert_eq!(without.post_json("/admin/reload", &json!({})).await.0, 404);
    without.stop().await;
}

#[tokio::test]
async fn docs_page_is_served_whole() {
    let s = TestServer::start().await;
    let r = s.client.get(s.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let page = r.text().await.unwrap();
    assert!(page.contains("openapi.json"), "the page reads the document");
    assert!(
        !page.contains("https://"),
        "the page loads nothing from the network"
    );
    s.stop().await;
}

/// `model_info` has one series, for the model serving now, however many were served.
#[tokio::test]
async fn model_info_keeps_only_the_current_model() {
    let s = TestServer::start().await;
    let first = s.state.current().unwrap().digest.clone();
    common::write_model(&s.model_path, &common::artifacts().1);
    assert_eq!(s.reload(Some(TOKEN)).await.0, 200);
    let second = s.state.current().unwrap().digest.clone();
    assert_ne!(first, second);
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("model_info{"))
        .collect();
    assert_eq!(series.len(), 1, "{series:?}");
    assert!(
        series[0].contains(&second) && series[0].ends_with(" 1"),
        "{series:?}"
    );
    s.stop().await;
}
