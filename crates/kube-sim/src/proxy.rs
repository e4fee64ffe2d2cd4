//! The API server's proxy to services and pods: `…/services/[http:]NAME[:PORT]/proxy/PATH`
//! and `…/pods/NAME[:PORT]/proxy/PATH`, forwarded to the process behind a ready pod.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::controller::is_ready;
use crate::resources::{PODS, Resource, SERVICES};
use crate::selectors::Selector;
use crate::{Shared, status_body};

const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Spreads requests over a service's ready pods.
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn error(code: u16, reason: &str, message: String) -> Response {
    let body = status_body(code, reason, &message, json!({}));
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `http:web:8080` → `web`; `web:http` → `web`; `web` → `web`.
fn object_name(spec: &str) -> &str {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [scheme, name, _] if *scheme == "http" || *scheme == "https" => name,
        [name, ..] => name,
        [] => spec,
    }
}

pub async fn forward(
    sim: &Arc<Shared>,
    res: &Resource,
    ns: &str,
    spec: &str,
    rest: &str,
    parts: Parts,
    body: Body,
) -> Response {
    let name = object_name(spec);
    let addr = if *res == SERVICES {
        let Some(svc) = sim.store.get(&SERVICES, ns, name) else {
            return error(404, "NotFound", format!("services \"{name}\" not found"));
        };
        let selector = svc
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(Selector::from_labels);
        let Some(selector) = selector else {
            return error(
                503,
                "ServiceUnavailable",
                format!("no endpoints available for service \"{name}\""),
            );
        };
        let ready: Vec<_> = sim
            .store
            .list(&PODS, Some(ns))
            .0
            .into_iter()
            .filter(|p| selector.matches(p) && is_ready(p))
            .filter_map(|p| sim.pod_addr(ns, p.pointer("/metadata/name")?.as_str()?))
            .collect();
        if ready.is_empty() {
            return error(
                503,
                "ServiceUnavailable",
                format!("no endpoints available for service \"{name}\""),
            );
        }
        ready[NEXT.fetch_add(1, Ordering::Relaxed) % ready.len()]
    } else if *res == PODS {
        if sim.store.get(&PODS, ns, name).is_none() {
            return error(404, "NotFound", format!("pods \"{name}\" not found"));
        }
        match sim.pod_addr(ns, name) {
            Some(a) => a,
            None => {
                return error(
                    503,
                    "ServiceUnavailable",
                    format!("pod \"{name}\" has no running container to proxy to"),
                );
            }
        }
    } else {
        return error(404, "NotFound", format!("{} have no proxy", res.plural));
    };
    let mut url = format!("http://{addr}/{rest}");
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                413,
                "RequestEntityTooLarge",
                "the request body is too large".into(),
            );
        }
    };
    let mut req = sim.http.request(parts.method.clone(), &url).body(body);
    for (k, v) in parts.headers.iter() {
        // Hop-by-hop headers and the API credentials stay at the API server.
        if !matches!(
            k.as_str(),
            "host"
                | "authorization"
                | "connection"
                | "content-length"
                | "transfer-encoding"
                | "accept-encoding"
        ) {
            req = req.header(k, v);
        }
    }
    let upstream = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return error(
                503,
                "ServiceUnavailable",
                format!("error trying to reach service: {e}"),
            );
        }
    };
    let status = upstream.status();
    let headers = upstream.headers().clone();
    let bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return error(
                503,
                "ServiceUnavailable",
                format!("error reading from the backend: {e}"),
            );
        }
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    for (k, v) in headers.iter() {
        if !matches!(
            k.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            resp.headers_mut().append(k, v.clone());
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_names_accept_scheme_and_port_forms() {
        assert_eq!(object_name("http:web:8080"), "web");
        assert_eq!(object_name("web:8080"), "web");
        assert_eq!(object_name("web"), "web");
    }
}
