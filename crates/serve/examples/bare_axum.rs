//! The benchmark's baseline: a bare axum handler answering `POST /predict` with a
//! constant JSON body, no model, no middleware. `bench/serve/run.sh` compares
//! `predict-buy serve` against it.
//!
//! `cargo run --release -p predict-buy-serve --example bare_axum -- 127.0.0.1:8092`

use axum::Router;
use axum::http::header;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8092".to_string());
    let app = Router::new().route(
        "/predict",
        post(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"predicted_class":0,"probability":0.1,"model_version":"constant"}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare_axum: listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
