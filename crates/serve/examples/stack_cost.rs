//! CPU time per `POST /predict` through the whole service stack (every layer, the
//! handler, the response body) but without sockets or hyper: what `predict-buy serve`
//! spends per request on top of the network, measured far more steadily than a load
//! test on a shared machine can. It runs on the system allocator and without a log
//! subscriber, so compare its numbers with each other, not with the binary's.
//!
//! `cargo run --release -p predict-buy-serve --example stack_cost -- MODEL.pbm [REQUESTS]`

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use predict_buy_serve::{AppState, Limits, ModelSource};
use tower::ServiceExt as _;

const SAMPLE: &str = r#"{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let model = args.next().expect("usage: stack_cost MODEL.pbm [REQUESTS]");
    let n: u32 = args.next().map_or(200_000, |s| s.parse().expect("a count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let state = AppState::new(ModelSource::File(model.into()), Limits::default(), None);
        state.reload(true).await.expect("the model loads");
        let app = predict_buy_serve::app(state);
        let request = || {
            Request::post("/predict")
                .header("content-type", "application/json")
                .header("content-length", SAMPLE.len())
                .body(Body::from(SAMPLE))
                .expect("a request")
        };
        let one = |app: axum::Router| async move {
            let response = app.oneshot(request()).await.expect("infallible");
            assert!(response.status().is_success());
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a body")
        };
        println!("{}", String::from_utf8_lossy(&one(app.clone()).await));
        for _ in 0..n / 10 {
            one(app.clone()).await;
        }
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..n {
                one(app.clone()).await;
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e9 / f64::from(n));
        }
        println!("{best:.0} ns per request (best of 5 x {n})");
    });
}
