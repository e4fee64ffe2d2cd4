//! `GET /docs`: the interactive API page the original FastAPI app's users had, as one
//! self-contained HTML page. It reads `/openapi.json` from the same server and lets a
//! person send each request and see the answer. Nothing is loaded from the network:
//! Swagger UI and friends come from a CDN or are downloaded at build time, and a
//! server behind a firewall (or a build without network) must still show its docs.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("docs.html");

pub(crate) async fn page() -> Response {
    let mut r = PAGE.into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page runs only its own inline script and talks only to this server.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        assert!(PAGE.contains("openapi.json"));
        for outside in ["http://", "https://", "<script src", "<link"] {
            assert!(!PAGE.contains(outside), "the page refers to {outside}");
        }
    }
}
