//! A small load generator for the deploy benchmark: keeps firing `POST /predict` at
//! endpoints and counts every request that does not come back 200 with a prediction,
//! to show a transition drops no request. Test support, not part of the library.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use predict_buy_api::PredictResponse;
use reqwest::{Client, Url};
use serde::Serialize;
use tokio::task::JoinSet;

/// What the load generator saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadStats {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, for the report.
    pub failures: Vec<String>,
    /// Successful answers per `model_version`.
    pub by_version: BTreeMap<String, u64>,
}

impl LoadStats {
    fn merge(&mut self, other: LoadStats) {
        self.ok += other.ok;
        self.failed += other.failed;
        for f in other.failures {
            if self.failures.len() < 10 {
                self.failures.push(f);
            }
        }
        for (k, v) in other.by_version {
            *self.by_version.entry(k).or_default() += v;
        }
    }
}

/// A running load generator; [`LoadGenerator::stop`] ends it and returns the counts.
pub struct LoadGenerator {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<LoadStats>,
}

impl LoadGenerator {
    /// Start `per_endpoint` workers per endpoint, each sending `body` then pausing
    /// `pause` (so the load does not starve the servers on a small machine).
    pub fn start(
        endpoints: &[Url],
        body: serde_json::Value,
        per_endpoint: usize,
        pause: Duration,
    ) -> Self {
        let client = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP client builds");
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for base in endpoints {
            let url = base.join("predict").expect("endpoint URLs take a path");
            for _ in 0..per_endpoint {
                let (client, url, body, stop) =
                    (client.clone(), url.clone(), body.clone(), Arc::clone(&stop));
                tasks.spawn(async move {
                    let mut stats = LoadStats::default();
                    while !stop.load(Ordering::Relaxed) {
                        match one(&client, &url, &body).await {
                            Ok(version) => {
                                stats.ok += 1;
                                *stats.by_version.entry(version).or_default() += 1;
                            }
                            Err(e) => {
                                stats.failed += 1;
                                if stats.failures.len() < 10 {
                                    stats.failures.push(format!("{url}: {e}"));
                                }
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                    stats
                });
            }
        }
        LoadGenerator { stop, tasks }
    }

    /// Stop every worker and add up what they saw.
    pub async fn stop(mut self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadStats::default();
        while let Some(stats) = self.tasks.join_next().await {
            total.merge(stats.expect("load workers do not panic"));
        }
        total
    }
}

async fn one(client: &Client, url: &Url, body: &serde_json::Value) -> Result<String, String> {
    let resp = client
        .post(url.clone())
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    let answer: PredictResponse<'static> =
        serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    Ok(answer.model_version.into_owned())
}
