//! `GET /model/report` over real HTTP: the serving model's HTML report.

mod common;

use common::TestServer;

#[tokio::test]
async fn the_serving_model_reports_itself_as_a_self_contained_page() {
    let s = TestServer::start().await;
    let version = s.state.current().unwrap().version.clone();
    let r = s.client.get(s.url("/model/report")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let page = r.text().await.unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..60]);
    assert!(page.contains(&format!("Model report: {version}")));
    for id in [
        "plot-roc",
        "plot-pr",
        "plot-calibration",
        "plot-threshold-0",
    ] {
        let at = page
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id}"));
        assert!(page[at..].trim_start_matches(|c| c != '>').contains("<svg"));
    }
    assert!(!page.contains("<script"));
    // The second request is the same page (drawn once per model).
    let (status, again) = s.get("/model/report").await;
    assert_eq!(status, 200);
    assert_eq!(again.as_str(), Some(page.as_str()));
    let (_, doc) = s.get("/openapi.json").await;
    assert!(doc["paths"]["/model/report"]["get"].is_object(), "{doc}");
    s.stop().await;
}
