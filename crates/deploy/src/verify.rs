//! Verification: every endpoint reports the release, is ready, and answers the
//! release's golden predictions exactly — within a deadline.

use std::time::{Duration, Instant};

use predict_buy_registry::{GoldenPrediction, ReleaseRecord};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::error::{Error, Result};

/// How long verification waits by default before giving up (and rolling back).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an endpoint that is not there yet is asked again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// One HTTP request may take at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{endpoint}: {problem}")]
pub struct VerifyFailure {
    pub endpoint: String,
    pub problem: String,
    /// True when the endpoint ran the release and answered wrongly (no point waiting);
    /// false when it never got there before the deadline.
    pub wrong_answer: bool,
}

/// How long each endpoint took to verify.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub elapsed: Duration,
    pub endpoints: Vec<(String, Duration)>,
}

/// Checks endpoints against a release.
#[derive(Debug, Clone)]
pub struct Verifier {
    client: Client,
    timeout: Duration,
    poll_interval: Duration,
    admin_token: Option<String>,
}

impl Verifier {
    pub fn new(timeout: Duration) -> Result<Self> {
        let client = Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(Error::Http)?;
        Ok(Verifier {
            client,
            timeout,
            poll_interval: POLL_INTERVAL,
            admin_token: None,
        })
    }

    /// Ask servers to re-read the registry at once (`POST /admin/reload`) instead of
    /// waiting for their next poll; sent with this bearer token.
    pub fn with_admin_token(mut self, token: Option<String>) -> Self {
        self.admin_token = token;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Poll every endpoint until each serves `release` correctly, or fail at the
    /// deadline (or at once if one answers a golden prediction wrongly).
    pub async fn verify(
        &self,
        endpoints: &[Url],
        release: &ReleaseRecord,
    ) -> std::result::Result<Verified, VerifyFailure> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut set = JoinSet::new();
        for (i, url) in endpoints.iter().enumerate() {
            let this = self.clone();
            let url = url.clone();
            let release = release.clone();
            set.spawn(async move { (i, this.verify_one(&url, &release, deadline).await) });
        }
        let mut times = vec![(String::new(), Duration::ZERO); endpoints.len()];
        while let Some(joined) = set.join_next().await {
            let (i, result) = joined.expect("verification tasks do not panic");
            match result {
                Ok(elapsed) => times[i] = (endpoints[i].to_string(), elapsed),
                Err(failure) => {
                    set.abort_all();
                    return Err(failure);
                }
            }
        }
        Ok(Verified {
            elapsed: start.elapsed(),
            endpoints: times,
        })
    }

    async fn verify_one(
        &self,
        base: &Url,
        release: &ReleaseRecord,
        deadline: Instant,
    ) -> std::result::Result<Duration, VerifyFailure> {
        let start = Instant::now();
        let tag = release.tag.to_string();
        let fail = |problem: String, wrong_answer: bool| VerifyFailure {
            endpoint: base.to_string(),
            problem,
            wrong_answer,
        };
        self.nudge(base).await;
        loop {
            // A hung request must not stretch verification past its deadline.
            let checked =
                tokio::time::timeout_at(deadline.into(), self.check(base, &tag, &release.golden))
                    .await
                    .unwrap_or_else(|_| Err(Check::NotYet("a request was still pending".into())));
            match checked {
                Ok(()) => return Ok(start.elapsed()),
                Err(Check::Wrong(problem)) => return Err(fail(problem, true)),
                Err(Check::NotYet(problem)) => {
                    if Instant::now() + self.poll_interval >= deadline {
                        // Report the last thing that was wrong, not just "timed out".
                        return Err(fail(
                            format!(
                                "not verified within {:.1}s: {problem}",
                                self.timeout.as_secs_f64()
                            ),
                            false,
                        ));
                    }
                    tokio::time::sleep(self.poll_interval).await;
                }
            }
        }
    }

    /// Best effort: servers without the admin endpoint still follow by polling.
    async fn nudge(&self, base: &Url) {
        let Ok(url) = base.join("admin/reload") else {
            return;
        };
        let mut req = self.client.post(url);
        if let Some(token) = &self.admin_token {
            req = req.bearer_auth(token);
        }
        if let Err(e) = req.send().await {
            tracing::debug!("reload nudge to {base} failed: {e}");
        }
    }

    async fn check(
        &self,
        base: &Url,
        tag: &str,
        golden: &[GoldenPrediction],
    ) -> std::result::Result<(), Check> {
        let root: serde_json::Value = self.get_json(base, "").await?;
        let version = root.get("model_version").and_then(|v| v.as_str());
        if version != Some(tag) {
            return Err(Check::NotYet(format!(
                "reports model_version {}, waiting for {tag}",
                version.map_or("none".to_string(), |v| format!("`{v}`"))
            )));
        }
        let ready = self.url(base, "readyz")?;
        let status = self
            .client
            .get(ready)
            .send()
            .await
            .map_err(|e| Check::NotYet(format!("GET /readyz: {}", describe(&e))))?
            .status();
        if status != StatusCode::OK {
            return Err(Check::NotYet(format!("GET /readyz answered {status}")));
        }
        for (i, g) in golden.iter().enumerate() {
            let url = self.url(base, "predict")?;
            let resp = self
                .client
                .post(url)
                .json(&g.input)
                .send()
                .await
                .map_err(|e| Check::NotYet(format!("POST /predict: {}", describe(&e))))?;
            let status = resp.status();
            let body: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| Check::NotYet(format!("POST /predict: {}", describe(&e))))?;
            let served_by = body.get("model_version").and_then(|v| v.as_str());
            // An answer from the previous model during the swap is not a failure yet.
            let wrong = |p: String| {
                if served_by == Some(tag) {
                    Check::Wrong(p)
                } else {
                    Check::NotYet(p)
                }
            };
            if status != StatusCode::OK {
                return Err(wrong(format!(
                    "golden input {i}: POST /predict answered {status}: {body}"
                )));
            }
            let class = body.get("predicted_class").and_then(|v| v.as_u64());
            let probability = body.get("probability").and_then(|v| v.as_f64());
            if class != Some(u64::from(g.predicted_class)) || probability != Some(g.probability) {
                return Err(wrong(format!(
                    "golden input {i}: expected class {} with probability {}, got class {} with probability {}",
                    g.predicted_class,
                    g.probability,
                    class.map_or("none".into(), |c| c.to_string()),
                    probability.map_or("none".into(), |p| p.to_string()),
                )));
            }
        }
        Ok(())
    }

    async fn get_json(
        &self,
        base: &Url,
        path: &str,
    ) -> std::result::Result<serde_json::Value, Check> {
        let url = self.url(base, path)?;
        let shown = format!("GET /{path}");
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| Check::NotYet(format!("{shown}: {}", describe(&e))))?;
        if !resp.status().is_success() {
            return Err(Check::NotYet(format!("{shown} answered {}", resp.status())));
        }
        resp.json()
            .await
            .map_err(|e| Check::NotYet(format!("{shown}: {}", describe(&e))))
    }

    fn url(&self, base: &Url, path: &str) -> std::result::Result<Url, Check> {
        // Keep a path prefix in the base URL: `http://h/api` + `predict` → `/api/predict`.
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        base.join(path)
            .map_err(|e| Check::Wrong(format!("cannot build URL for /{path}: {e}")))
    }
}

enum Check {
    /// Not there yet (unreachable, old release, not ready): ask again.
    NotYet(String),
    /// Runs the release and answers wrongly: fail now.
    Wrong(String),
}

/// The innermost cause of a reqwest error: "connection refused" rather than
/// "error sending request".
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
