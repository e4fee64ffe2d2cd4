//! The HTTP side: routing, discovery, CRUD, server-side apply, patches and watches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fields;
use crate::resources::{self, DEPLOYMENTS, NAMESPACES, Resource};
use crate::selectors::Selector;
use crate::store::{Change, now};
use crate::{RequestRecord, Shared, lock, status_body};

/// The largest request body accepted; manifests are far smaller.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// An API error, rendered as the real server's Status body.
#[derive(Debug)]
pub struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: json!({}),
        }
    }

    fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    fn not_found(res: &Resource, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .details(json!({"name": name, "group": res.group, "kind": res.plural}))
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    fn invalid(res: &Resource, name: &str, causes: &[(&str, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        ApiError::new(
            422,
            "Invalid",
            format!("{}.{} \"{name}\" is invalid: {}", res.kind, res.group, text.join(", "))
                .replace(&format!("{}. ", res.kind), &format!("{} ", res.kind)),
        )
        .details(json!({
            "name": name, "group": res.group, "kind": res.kind,
            "causes": causes.iter().map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f})).collect::<Vec<_>>(),
        }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(
            code,
            &status_body(self.code, self.reason, &self.message, self.details),
        )
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Which API a path addresses once `/api/v1` or `/apis/g/v` is stripped.
struct Target {
    res: Resource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    rest: String,
}

fn parse_target(group: &str, version: &str, segs: &[&str]) -> Result<Target, ApiError> {
    let unknown = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let find = |plural: &str| resources::find(group, version, plural).ok_or_else(unknown);
    let (namespace, segs) = match segs {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, segs),
    };
    let (res, name, sub, rest) = match segs {
        [plural] => (find(plural)?, None, None, Vec::new()),
        [plural, name] => (find(plural)?, Some(name.to_string()), None, Vec::new()),
        [plural, name, sub, rest @ ..] => (
            find(plural)?,
            Some(name.to_string()),
            Some(sub.to_string()),
            rest.to_vec(),
        ),
        _ => return Err(unknown()),
    };
    if namespace.is_some() && !res.namespaced {
        return Err(unknown());
    }
    Ok(Target {
        res,
        namespace,
        name,
        sub,
        rest: rest.join("/"),
    })
}

async fn handle(State(sim): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    lock(&sim.log).push(RequestRecord {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let discovery = match segs.as_slice() {
        ["version"] => Some(resources::version()),
        ["api"] => Some(resources::core_versions()),
        ["apis"] => Some(resources::group_list()),
        ["api", "v1"] => resources::resource_list("", "v1"),
        ["apis", g] => resources::group(g),
        ["apis", g, v] => resources::resource_list(g, v),
        _ => None,
    };
    if let Some(doc) = discovery {
        return json_response(StatusCode::OK, &doc);
    }
    let target = match segs.as_slice() {
        ["api", "v1", rest @ ..] => parse_target("", "v1", rest),
        ["apis", g, v, rest @ ..] => parse_target(g, v, rest),
        _ => Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    if target.sub.as_deref() == Some("proxy") {
        let resource = format!("{}/proxy", target.res.plural);
        let ns = target.namespace.clone().unwrap_or_default();
        let verb = verb_of(&parts.method, true, &query);
        if sim.denied(verb, &resource, &ns) {
            return forbidden(&sim, verb, &target, &resource).into_response();
        }
        return crate::proxy::forward(
            &sim,
            &target.res,
            &ns,
            target.name.as_deref().unwrap_or_default(),
            &target.rest,
            parts,
            body,
        )
        .await;
    }
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the request body is too large",
            )
            .into_response();
        }
    };
    let verb = verb_of(&parts.method, target.name.is_some(), &query);
    let qualified = target.res.qualified();
    if sim.denied(
        verb,
        &qualified,
        target.namespace.as_deref().unwrap_or_default(),
    ) {
        return forbidden(&sim, verb, &target, target.res.plural).into_response();
    }
    match dispatch(&sim, &parts.method, &parts.headers, &target, &query, body) {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn verb_of(method: &Method, named: bool, query: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if query.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "get",
    }
}

fn forbidden(sim: &Shared, verb: &str, t: &Target, resource: &str) -> ApiError {
    let subject = match &t.name {
        Some(n) => format!("{} \"{n}\"", t.res.qualified()),
        None => t.res.qualified(),
    };
    let scope = match &t.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    ApiError::new(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\"{scope}",
            sim.options.user, t.res.group
        ),
    )
    .details(json!({"name": t.name.clone().unwrap_or_default(), "group": t.res.group, "kind": t.res.plural}))
}

fn dispatch(
    sim: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    t: &Target,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    if let Some(sub) = &t.sub
        && sub != "status"
    {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({sub})"),
        ));
    }
    match (method, &t.name) {
        (&Method::GET, None) => {
            let selector = Selector::parse(
                query.get("labelSelector").map(String::as_str),
                query.get("fieldSelector").map(String::as_str),
            )
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return Ok(watch(sim, t.res, t.namespace.clone(), selector, query));
            }
            let (items, rv) = sim.store.list(&t.res, t.namespace.as_deref());
            let items: Vec<Value> = items.into_iter().filter(|o| selector.matches(o)).collect();
            if wants_table(headers) {
                return Ok(json_response(
                    StatusCode::OK,
                    &crate::table::render(&t.res, &items, &rv.to_string()),
                ));
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()}, "items": items,
                }),
            ))
        }
        (&Method::GET, Some(name)) => {
            let obj = sim
                .store
                .get(&t.res, &ns, name)
                .ok_or_else(|| ApiError::not_found(&t.res, name))?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (&Method::POST, None) => {
            let mut obj = parse_body(&body)?;
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string);
            let name = match name {
                Some(n) if !n.is_empty() => n,
                _ => match obj
                    .pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                {
                    Some(prefix) => {
                        let n = format!("{prefix}{}", short_id(&sim.store.next_uid()));
                        obj["metadata"]["name"] = json!(n);
                        n
                    }
                    None => {
                        return Err(ApiError::invalid(
                            &t.res,
                            "",
                            &[(
                                "metadata.name",
                                "Required value: name or generateName is required".into(),
                            )],
                        ));
                    }
                },
            };
            check_namespace(sim, &t.res, &ns)?;
            if sim.store.get(&t.res, &ns, &name).is_some() {
                return Err(ApiError::new(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", t.res.qualified()),
                )
                .details(json!({"name": name, "group": t.res.group, "kind": t.res.plural})));
            }
            let manager = manager_of(query, headers);
            let stored = write(
                sim,
                &t.res,
                &ns,
                None,
                obj,
                Write::Update(&manager),
                dry_run,
            )?;
            Ok(json_response(StatusCode::CREATED, &stored))
        }
        (&Method::PUT, Some(name)) => {
            let obj = parse_body(&body)?;
            let old = sim
                .store
                .get(&t.res, &ns, name)
                .ok_or_else(|| ApiError::not_found(&t.res, name))?;
            if let Some(rv) = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && Some(rv)
                    != old
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        t.res.qualified()
                    ),
                ));
            }
            let manager = manager_of(query, headers);
            let obj = if t.sub.as_deref() == Some("status") {
                let mut o = old.clone();
                o["status"] = obj["status"].clone();
                o
            } else {
                obj
            };
            let stored = write(
                sim,
                &t.res,
                &ns,
                Some(&old),
                obj,
                Write::Update(&manager),
                dry_run,
            )?;
            Ok(json_response(StatusCode::OK, &stored))
        }
        (&Method::PATCH, Some(name)) => patch(sim, headers, t, &ns, name, query, &body, dry_run),
        (&Method::DELETE, Some(name)) => {
            let old = sim
                .store
                .get(&t.res, &ns, name)
                .ok_or_else(|| ApiError::not_found(&t.res, name))?;
            if dry_run {
                return Ok(json_response(StatusCode::OK, &old));
            }
            if t.res == NAMESPACES {
                for res in resources::ALL.iter().filter(|r| r.namespaced) {
                    for obj in sim.store.list(res, Some(name)).0 {
                        if let Some(n) = obj.pointer("/metadata/name").and_then(Value::as_str) {
                            sim.store.delete(res, name, n);
                        }
                    }
                }
            }
            let gone = sim.store.delete(&t.res, &ns, name).unwrap_or(old);
            Ok(json_response(StatusCode::OK, &gone))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )),
    }
}

/// kubectl's human output asks for a Table first and takes plain JSON as the fallback.
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table") && a.contains("g=meta.k8s.io"))
}

fn short_id(uid: &str) -> String {
    let n = u64::from_str_radix(uid.rsplit('-').next().unwrap_or("0"), 16).unwrap_or(0);
    crate::controller::safe_encode(n.wrapping_mul(0x9E37_79B9_7F4A_7C15), 5)
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    // YAML is a superset of JSON, but JSON parsing is exact about numbers; try it first.
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml_ng::from_slice::<Value>(body))
        .map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON or YAML: {e}"))
        })
        .and_then(|v| {
            if v.is_object() {
                Ok(v)
            } else {
                Err(ApiError::bad_request("the request body is not an object"))
            }
        })
}

fn manager_of(query: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(m) = query.get("fieldManager") {
        return m.clone();
    }
    // The real server derives a default manager from the user agent's program name.
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

fn check_namespace(sim: &Shared, res: &Resource, ns: &str) -> Result<(), ApiError> {
    if res.namespaced && sim.store.get(&NAMESPACES, "", ns).is_none() {
        return Err(
            ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
                .details(json!({"name": ns, "kind": "namespaces"})),
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn patch(
    sim: &Arc<Shared>,
    headers: &HeaderMap,
    t: &Target,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
    body: &[u8],
    dry_run: bool,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let old = sim.store.get(&t.res, ns, name);
    if content_type == "application/apply-patch+yaml" {
        let manager = query.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        })?;
        let force = query.get("force").is_some_and(|f| f == "true");
        let applied = parse_body(body)?;
        if applied.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                applied
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )));
        }
        let wrong_kind = applied["kind"].as_str() != Some(t.res.kind)
            || applied["apiVersion"].as_str() != Some(t.res.api_version().as_str());
        if wrong_kind {
            return Err(ApiError::bad_request(format!(
                "the body is {} {}, but the URL addresses {} {}",
                applied["apiVersion"],
                applied["kind"],
                t.res.api_version(),
                t.res.kind
            )));
        }
        check_namespace(sim, &t.res, ns)?;
        let created = old.is_none();
        let stored = write(
            sim,
            &t.res,
            ns,
            old.as_ref(),
            applied,
            Write::Apply { manager, force },
            dry_run,
        )?;
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok(json_response(code, &stored));
    }
    let old = old.ok_or_else(|| ApiError::not_found(&t.res, name))?;
    let patch_doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let mut new = old.clone();
    match content_type.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            fields::merge_patch(&mut new, &patch_doc)
        }
        "application/json-patch+json" => fields::json_patch(&mut new, &patch_doc).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!(
                    "the JSON patch cannot be applied to {} \"{name}\": {e}",
                    t.res.qualified()
                ),
            )
        })?,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the patch content type {other:?} is not supported"),
            ));
        }
    }
    if t.sub.as_deref() == Some("status") {
        let status = new["status"].clone();
        new = old.clone();
        new["status"] = status;
    }
    let manager = manager_of(query, headers);
    let stored = write(
        sim,
        &t.res,
        ns,
        Some(&old),
        new,
        Write::Update(&manager),
        dry_run,
    )?;
    Ok(json_response(StatusCode::OK, &stored))
}

/// How a write records field ownership.
enum Write<'a> {
    Apply { manager: &'a str, force: bool },
    Update(&'a str),
}

fn conflict_error(res: &Resource, name: &str, conflicts: &[fields::Conflict]) -> ApiError {
    let n = conflicts.len();
    let message = if n == 1 {
        let c = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager,
            c.api_version,
            fields::display_path(&c.path)
        )
    } else {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|c| {
                format!(
                    "conflict with \"{}\" using {}: {}",
                    c.manager,
                    c.api_version,
                    fields::display_path(&c.path)
                )
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    ApiError::new(409, "Conflict", message).details(json!({
        "name": name, "group": res.group, "kind": res.plural,
        "causes": conflicts.iter().map(|c| json!({
            "reason": "FieldManagerConflict",
            "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
            "field": fields::display_path(&c.path),
        })).collect::<Vec<_>>(),
    }))
}

/// Every write goes through here: ownership, defaults, validation, generation, storage.
fn write(
    sim: &Shared,
    res: &Resource,
    ns: &str,
    old: Option<&Value>,
    incoming: Value,
    how: Write<'_>,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let name = incoming
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = res.api_version();
    let t = now();
    let mut new = match how {
        Write::Apply { manager, force } => {
            fields::apply(old, &incoming, manager, &api_version, force, &t)
                .map_err(|c| conflict_error(res, &name, &c))?
        }
        Write::Update(manager) => {
            let mut new = incoming;
            // Keep what clients cannot change through the main resource.
            if let Some(old) = old {
                for key in ["uid", "creationTimestamp", "generation"] {
                    if let Some(v) = old.pointer(&format!("/metadata/{key}")) {
                        new["metadata"][key] = v.clone();
                    }
                }
                // A client that sends no managedFields keeps the recorded ones.
                if !new
                    .pointer("/metadata/managedFields")
                    .is_some_and(Value::is_array)
                    && let Some(mf) = old.pointer("/metadata/managedFields")
                {
                    new["metadata"]["managedFields"] = mf.clone();
                }
            }
            fields::record_update(old, &mut new, manager, &api_version, &t);
            new
        }
    };
    if res.namespaced {
        new["metadata"]["namespace"] = json!(ns);
    }
    new["apiVersion"] = json!(api_version);
    new["kind"] = json!(res.kind);
    match old.and_then(|o| o.get("status")) {
        // Status belongs to the controllers: a write to the main resource keeps it.
        Some(status) if res.plural != "events" => new["status"] = status.clone(),
        _ => {}
    }
    defaults(sim, res, &mut new);
    validate(res, &name, &new)?;
    let generation = match old {
        None => 1,
        Some(o) => {
            let g = o
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if o.get("spec") != new.get("spec") {
                g + 1
            } else {
                g
            }
        }
    };
    if res.plural != "events" && res.plural != "namespaces" {
        new["metadata"]["generation"] = json!(generation);
    }
    if dry_run {
        if let Some(o) = old {
            new["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
        }
        return Ok(new);
    }
    Ok(sim.store.put(res, new))
}

fn defaults(sim: &Shared, res: &Resource, obj: &mut Value) {
    match res.plural {
        "deployments" => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            spec.as_object_mut()
                .map(|s| s.entry("replicas").or_insert(json!(1)));
            for (k, v) in [
                ("revisionHistoryLimit", 10),
                ("progressDeadlineSeconds", 600),
            ] {
                spec.as_object_mut().map(|s| s.entry(k).or_insert(json!(v)));
            }
            let strategy = spec
                .as_object_mut()
                .map(|s| s.entry("strategy").or_insert(json!({})));
            if let Some(Value::Object(st)) = strategy {
                st.entry("type").or_insert(json!("RollingUpdate"));
                if st.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = st.entry("rollingUpdate").or_insert(json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        ru.entry("maxUnavailable").or_insert(json!("25%"));
                        ru.entry("maxSurge").or_insert(json!("25%"));
                    }
                }
            }
        }
        "services" => {
            let uid = sim.store.next_uid();
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                return;
            };
            spec.entry("type").or_insert(json!("ClusterIP"));
            spec.entry("sessionAffinity").or_insert(json!("None"));
            let n = u64::from_str_radix(uid.rsplit('-').next().unwrap_or("1"), 16).unwrap_or(1);
            spec.entry("clusterIP").or_insert(json!(format!(
                "10.96.{}.{}",
                (n / 250) % 250,
                n % 250 + 1
            )));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.entry("protocol").or_insert(json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        p.entry("targetPort").or_insert(port);
                    }
                }
            }
        }
        "namespaces" => {
            obj["status"] = json!({"phase": "Active"});
            let name = obj["metadata"]["name"].clone();
            if let Some(meta) = obj["metadata"].as_object_mut() {
                let labels = meta.entry("labels").or_insert(json!({}));
                labels["kubernetes.io/metadata.name"] = name;
            }
        }
        "pods" if obj.get("status").is_none() => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        _ => {}
    }
}

fn validate(res: &Resource, name: &str, obj: &Value) -> Result<(), ApiError> {
    if res.plural != "deployments" {
        return Ok(());
    }
    let mut causes = Vec::new();
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object);
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    match selector {
        None => causes.push(("spec.selector", "Required value".to_string())),
        Some(sel)
            if !Selector::from_labels(sel).matches(&json!({"metadata": {"labels": labels}})) =>
        {
            causes.push((
                "spec.template.metadata.labels",
                format!("Invalid value: {labels}: `selector` does not match template `labels`"),
            ))
        }
        _ => {}
    }
    let containers = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        causes.push((
            "spec.template.spec.containers",
            "Required value".to_string(),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, name, &causes))
    }
}

/// Creates a namespace if it is missing (the handle's and the options' namespaces).
pub fn create_namespace(sim: &Shared, name: &str) {
    if sim.store.get(&NAMESPACES, "", name).is_none() {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        // Cannot fail: namespaces have no validation and no conflicts on creation.
        let _ = write(
            sim,
            &NAMESPACES,
            "",
            None,
            obj,
            Write::Update("kube-sim"),
            false,
        );
    }
}

/// A hand edit of a Deployment by `manager`, recorded as an update.
pub fn hand_edit(
    sim: &Shared,
    ns: &str,
    name: &str,
    manager: &str,
    patch: &Value,
) -> Option<Value> {
    let old = sim.store.get(&DEPLOYMENTS, ns, name)?;
    let mut new = old.clone();
    fields::merge_patch(&mut new, patch);
    write(
        sim,
        &DEPLOYMENTS,
        ns,
        Some(&old),
        new,
        Write::Update(manager),
        false,
    )
    .ok()
}

fn watch(
    sim: &Arc<Shared>,
    res: Resource,
    ns: Option<String>,
    selector: Selector,
    query: &HashMap<String, String>,
) -> Response {
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let requested = query
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0");
    let initial_events = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let mut lines: Vec<Value> = Vec::new();
    let from = match requested.and_then(|v| v.parse::<u64>().ok()) {
        Some(rv) if !initial_events => rv,
        _ => {
            let (items, rv) = sim.store.list(&res, ns.as_deref());
            lines.extend(
                items
                    .into_iter()
                    .filter(|o| selector.matches(o))
                    .map(|o| json!({"type": "ADDED", "object": o})),
            );
            if initial_events {
                lines.push(json!({"type": "BOOKMARK", "object": {
                    "kind": res.kind, "apiVersion": res.api_version(),
                    "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}},
                }}));
            }
            rv
        }
    };
    let (backlog, mut rx) = match sim.store.watch_from(from) {
        Ok(w) => w,
        Err(_) => {
            let gone = status_body(
                410,
                "Expired",
                &format!("too old resource version: {from}"),
                json!({}),
            );
            let line = json!({"type": "ERROR", "object": gone});
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                format!("{line}\n"),
            )
                .into_response();
        }
    };
    let keep = move |c: &Change| c.is_for(&res, ns.as_deref()) && selector.matches(&c.object);
    lines.extend(
        backlog
            .iter()
            .filter(|c| keep(c))
            .map(|c| json!({"type": c.kind, "object": *c.object})),
    );
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        for line in lines {
            if tx.send(Ok(Bytes::from(format!("{line}\n")))).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                change = rx.recv() => match change {
                    Ok(c) if keep(&c) => {
                        let line = json!({"type": c.kind, "object": *c.object});
                        if tx.send(Ok(Bytes::from(format!("{line}\n")))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Lagged or closed: end the watch; clients re-list and watch again.
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
