//! Verification: every endpoint reports the release, is ready, and answers the
//! release's golden predictions exactly — within a deadline.
//!
//! The engine sees verification through the [`Verify`] trait, so it can be tested with
//! a fake. [`Verifier`] is the HTTP implementation: it parses each response into the
//! API's wire types ([`predict_buy_api`]) and judges them with pure functions
//! ([`check_root`], [`check_ready`], [`check_prediction`], [`check_nudge`]).
//!
//! A failure says whom it blames ([`FailureKind::blames_release`]): a release that
//! answers a golden input wrongly or that a server refuses to load is bad; an endpoint
//! that cannot be reached, or a deadline that passes before the release answers, says
//! nothing about the release, only that the environment could not be checked.

use std::future::Future;
use std::time::{Duration, Instant};

use predict_buy_api::{HEALTH_OK, PredictResponse, RootResponse};
use predict_buy_registry::{GoldenPrediction, ReleaseRecord, ReleaseTag};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;
use serde::ser::SerializeStruct as _;
use tokio::task::JoinSet;

use crate::error::{Error, Result};

/// How long verification waits by default before giving up (and rolling back).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an endpoint that is not there yet is asked again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// One HTTP request may take at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Bodies quoted in failure messages are cut to this many characters.
const QUOTE_LIMIT: usize = 300;

/// Checks that endpoints serve a release correctly.
pub trait Verify: Send + Sync {
    /// How long [`Verify::verify`] may take; shown in plans.
    fn timeout(&self) -> Duration;

    /// Wait until every endpoint serves `release` correctly, or fail. Things worth
    /// telling the operator that do not decide the outcome (a refused reload nudge)
    /// are pushed to `warnings`.
    fn verify(
        &self,
        endpoints: &[Url],
        release: &ReleaseRecord,
        warnings: &mut Vec<String>,
    ) -> impl Future<Output = std::result::Result<Verified, VerifyFailure>> + Send;
}

/// Why verification failed, and so whom it blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The endpoint served the release and answered a golden input wrongly.
    WrongAnswer,
    /// The server refused to load the release (it answered the reload with 422).
    RefusedToLoad,
    /// The endpoint could not be reached until the deadline.
    Unreachable,
    /// The endpoint answered, but not as the release, before the deadline.
    TimedOut,
}

impl FailureKind {
    /// True when the release itself misbehaved; false when the environment could not
    /// be checked, which must not mark the release `failed`.
    pub fn blames_release(self) -> bool {
        matches!(self, FailureKind::WrongAnswer | FailureKind::RefusedToLoad)
    }
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{endpoint}: {problem}")]
pub struct VerifyFailure {
    pub endpoint: String,
    pub problem: String,
    pub kind: FailureKind,
}

impl Serialize for VerifyFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("VerifyFailure", 4)?;
        st.serialize_field("endpoint", &self.endpoint)?;
        st.serialize_field("problem", &self.problem)?;
        st.serialize_field("kind", &self.kind)?;
        // Kept from before `kind` existed: `--json` readers test it.
        st.serialize_field("wrong_answer", &(self.kind == FailureKind::WrongAnswer))?;
        st.end()
    }
}

/// How long each endpoint took to verify.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub elapsed: Duration,
    pub endpoints: Vec<(String, Duration)>,
}

/// One check's verdict short of success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The endpoint did not answer (connection refused, reset, request timeout).
    Unreachable(String),
    /// It answered, but does not serve the release correctly yet (old release, not
    /// ready): ask again.
    NotYet(String),
    /// It serves the release and answers wrongly: fail now.
    Wrong(String),
}

/// `GET /` must report the release as its `model_version`.
pub fn check_root(root: &RootResponse<'_>, tag: &ReleaseTag) -> std::result::Result<(), Check> {
    if root.health_check != HEALTH_OK {
        return Err(Check::NotYet(format!(
            "GET / reports health_check `{}`",
            root.health_check
        )));
    }
    let tag = tag.to_string();
    match root.model_version.as_deref() {
        Some(v) if v == tag => Ok(()),
        Some(v) => Err(Check::NotYet(format!(
            "reports model_version `{v}`, waiting for {tag}"
        ))),
        None => Err(Check::NotYet(format!(
            "reports no model yet, waiting for {tag}"
        ))),
    }
}

/// `GET /readyz` must answer 200.
pub fn check_ready(status: StatusCode) -> std::result::Result<(), Check> {
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(Check::NotYet(format!("GET /readyz answered {status}")))
    }
}

/// What `POST /predict` answered, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictAnswer {
    /// 200 with a prediction.
    Prediction(PredictResponse<'static>),
    /// Anything else: the status and the start of the body.
    Other { status: StatusCode, body: String },
}

/// Golden input `i` must get exactly the recorded class and probability. A wrong
/// answer from another release (the previous one, still serving during the swap) is
/// not a failure yet; from `tag` it is.
pub fn check_prediction(
    i: usize,
    golden: &GoldenPrediction,
    answer: &PredictAnswer,
    tag: &ReleaseTag,
) -> std::result::Result<(), Check> {
    let p = match answer {
        PredictAnswer::Prediction(p) => p,
        // Without a prediction there is no model_version saying who answered.
        PredictAnswer::Other { status, body } => {
            return Err(Check::NotYet(format!(
                "golden input {i}: POST /predict answered {status}: {body}"
            )));
        }
    };
    if p.predicted_class == golden.predicted_class && p.probability == golden.probability {
        return Ok(());
    }
    let problem = format!(
        "golden input {i}: expected class {} with probability {}, got class {} with probability {} from {}",
        golden.predicted_class,
        golden.probability,
        p.predicted_class,
        p.probability,
        p.model_version
    );
    if p.model_version == tag.to_string() {
        Err(Check::Wrong(problem))
    } else {
        Err(Check::NotYet(problem))
    }
}

/// What the server made of `POST /admin/reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nudge {
    /// It re-read the registry.
    Accepted,
    /// It tried, and refused the release's model: the release does not load.
    RefusedModel(String),
    /// It refused our token: verification falls back to the servers' polling, which
    /// the operator should hear about.
    Unauthorized(String),
    /// It has no reload endpoint, or could not read the registry just then: polling
    /// will tell.
    Ignored(String),
}

/// Judge the reload nudge's answer.
pub fn check_nudge(status: StatusCode, body: &str) -> Nudge {
    let body = quote(body);
    match status {
        s if s.is_success() => Nudge::Accepted,
        StatusCode::UNPROCESSABLE_ENTITY => {
            Nudge::RefusedModel(format!("the server refused to load the release: {body}"))
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Nudge::Unauthorized(format!(
            "the server refused the reload nudge with {status} (is PREDICT_BUY_ADMIN_TOKEN the server's admin token?); waiting for its next registry poll instead"
        )),
        s => Nudge::Ignored(format!("POST /admin/reload answered {s}: {body}")),
    }
}

fn quote(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_string(),
    }
}

/// Checks endpoints against a release over HTTP.
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
    /// waiting for their next poll; sent with this bearer token. Without a token no
    /// nudge is sent, since the server would refuse it.
    pub fn with_admin_token(mut self, token: Option<String>) -> Self {
        self.admin_token = token.filter(|t| !t.trim().is_empty());
        self
    }

    async fn verify_one(
        &self,
        base: &Url,
        release: &ReleaseRecord,
        deadline: Instant,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Duration, VerifyFailure> {
        let start = Instant::now();
        let fail = |problem: String, kind: FailureKind| VerifyFailure {
            endpoint: base.to_string(),
            problem,
            kind,
        };
        match self.nudge(base).await {
            None | Some(Nudge::Accepted) => {}
            Some(Nudge::RefusedModel(problem)) => {
                return Err(fail(problem, FailureKind::RefusedToLoad));
            }
            Some(Nudge::Unauthorized(problem)) => warnings.push(format!("{base}: {problem}")),
            Some(Nudge::Ignored(problem)) => tracing::debug!("reload nudge to {base}: {problem}"),
        }
        let mut last: Option<(String, FailureKind)> = None;
        loop {
            // A hung request must not stretch verification past its deadline.
            let Ok(checked) =
                tokio::time::timeout_at(deadline.into(), self.check(base, release)).await
            else {
                // Cut off mid-check: the last finished check says best what was wrong
                // (a dead endpoint stays `unreachable` though the deadline fell during
                // a retry).
                let (problem, kind) = last.unwrap_or_else(|| {
                    ("a request was still pending".into(), FailureKind::TimedOut)
                });
                return Err(fail(
                    format!(
                        "not verified within {:.1}s: {problem}",
                        self.timeout.as_secs_f64()
                    ),
                    kind,
                ));
            };
            let (problem, kind) = match checked {
                Ok(()) => return Ok(start.elapsed()),
                Err(Check::Wrong(problem)) => return Err(fail(problem, FailureKind::WrongAnswer)),
                Err(Check::Unreachable(problem)) => (problem, FailureKind::Unreachable),
                Err(Check::NotYet(problem)) => (problem, FailureKind::TimedOut),
            };
            if Instant::now() + self.poll_interval >= deadline {
                // Report the last thing that was wrong, not just "timed out".
                return Err(fail(
                    format!(
                        "not verified within {:.1}s: {problem}",
                        self.timeout.as_secs_f64()
                    ),
                    kind,
                ));
            }
            last = Some((problem, kind));
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// `None` when no nudge was sent (no token) or it did not reach the server.
    async fn nudge(&self, base: &Url) -> Option<Nudge> {
        let token = self.admin_token.as_ref()?;
        let url = join(base, "admin/reload").ok()?;
        let resp = match self.client.post(url).bearer_auth(token).send().await {
            Ok(resp) => resp,
            Err(e) => {
                // Unreachable now; the polling loop says so if it stays that way.
                tracing::debug!("reload nudge to {base} failed: {}", describe(&e));
                return None;
            }
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Some(check_nudge(status, &body))
    }

    async fn check(&self, base: &Url, release: &ReleaseRecord) -> std::result::Result<(), Check> {
        let (status, body) = self.send(self.client.get(join(base, "")?), "GET /").await?;
        if !status.is_success() {
            return Err(Check::NotYet(format!(
                "GET / answered {status}: {}",
                quote(&body)
            )));
        }
        let root: RootResponse<'static> = serde_json::from_str(&body).map_err(|e| {
            Check::NotYet(format!(
                "GET / did not answer the API's root document ({e}): {}",
                quote(&body)
            ))
        })?;
        check_root(&root, &release.tag)?;
        let (status, _) = self
            .send(self.client.get(join(base, "readyz")?), "GET /readyz")
            .await?;
        check_ready(status)?;
        for (i, g) in release.golden.iter().enumerate() {
            let request = self.client.post(join(base, "predict")?).json(&g.input);
            let (status, body) = self.send(request, "POST /predict").await?;
            let answer = parse_prediction(status, &body);
            check_prediction(i, g, &answer, &release.tag)?;
        }
        Ok(())
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        shown: &str,
    ) -> std::result::Result<(StatusCode, String), Check> {
        let resp = request
            .send()
            .await
            .map_err(|e| Check::Unreachable(format!("{shown}: {}", describe(&e))))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| Check::Unreachable(format!("{shown}: {}", describe(&e))))?;
        Ok((status, body))
    }
}

impl Verify for Verifier {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Poll every endpoint until each serves `release` correctly, or fail at the
    /// deadline (or at once if one answers a golden prediction wrongly).
    async fn verify(
        &self,
        endpoints: &[Url],
        release: &ReleaseRecord,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Verified, VerifyFailure> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut set = JoinSet::new();
        for (i, url) in endpoints.iter().enumerate() {
            let this = self.clone();
            let url = url.clone();
            let release = release.clone();
            set.spawn(async move {
                let mut warnings = Vec::new();
                let result = this
                    .verify_one(&url, &release, deadline, &mut warnings)
                    .await;
                (i, result, warnings)
            });
        }
        let mut times = vec![(String::new(), Duration::ZERO); endpoints.len()];
        while let Some(joined) = set.join_next().await {
            let (i, result, found) = match joined {
                Ok(done) => done,
                Err(e) => {
                    return Err(VerifyFailure {
                        endpoint: "verifier".into(),
                        problem: format!("a verification task stopped: {e}"),
                        kind: FailureKind::TimedOut,
                    });
                }
            };
            warnings.extend(found);
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
}

/// Parse `POST /predict`'s answer into the wire type, or keep it as text.
pub fn parse_prediction(status: StatusCode, body: &str) -> PredictAnswer {
    if status == StatusCode::OK
        && let Ok(p) = serde_json::from_str::<PredictResponse<'static>>(body)
    {
        return PredictAnswer::Prediction(p);
    }
    PredictAnswer::Other {
        status,
        body: quote(body),
    }
}

fn join(base: &Url, path: &str) -> std::result::Result<Url, Check> {
    // Keep a path prefix in the base URL: `http://h/api` + `predict` → `/api/predict`.
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    base.join(path)
        .map_err(|e| Check::Wrong(format!("cannot build URL for /{path}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> ReleaseTag {
        ReleaseTag::parse(s).unwrap()
    }

    fn root(version: Option<&str>) -> RootResponse<'static> {
        RootResponse {
            health_check: HEALTH_OK.into(),
            model_version: version.map(|v| v.to_string().into()),
            release: None,
            model_digest: None,
        }
    }

    fn golden() -> GoldenPrediction {
        GoldenPrediction {
            input: serde_json::json!({"Age": 40}),
            predicted_class: 1,
            probability: 0.625,
        }
    }

    fn answer(class: u8, probability: f64, version: &str) -> PredictAnswer {
        PredictAnswer::Prediction(PredictResponse {
            predicted_class: class,
            probability,
            model_version: version.to_string().into(),
        })
    }

    #[test]
    fn root_must_name_the_release() {
        let v = tag("v1.2.0");
        assert_eq!(check_root(&root(Some("v1.2.0")), &v), Ok(()));
        assert_eq!(
            check_root(&root(Some("v1.1.0")), &v),
            Err(Check::NotYet(
                "reports model_version `v1.1.0`, waiting for v1.2.0".into()
            ))
        );
        assert!(
            matches!(check_root(&root(None), &v), Err(Check::NotYet(m)) if m.contains("no model"))
        );
        let mut sick = root(Some("v1.2.0"));
        sick.health_check = "DEGRADED".into();
        assert!(matches!(check_root(&sick, &v), Err(Check::NotYet(m)) if m.contains("DEGRADED")));
    }

    #[test]
    fn readiness_needs_200() {
        assert_eq!(check_ready(StatusCode::OK), Ok(()));
        assert_eq!(
            check_ready(StatusCode::SERVICE_UNAVAILABLE),
            Err(Check::NotYet(
                "GET /readyz answered 503 Service Unavailable".into()
            ))
        );
    }

    #[test]
    fn a_wrong_answer_blames_only_the_release_that_gave_it() {
        let v = tag("v1.2.0");
        let g = golden();
        assert_eq!(
            check_prediction(0, &g, &answer(1, 0.625, "v1.2.0"), &v),
            Ok(())
        );
        // Off by one ulp is wrong: golden answers are exact.
        let close = f64::from_bits(0.625f64.to_bits() + 1);
        let wrong = check_prediction(3, &g, &answer(1, close, "v1.2.0"), &v);
        assert!(
            matches!(&wrong, Err(Check::Wrong(m)) if m.starts_with("golden input 3: expected class 1 with probability 0.625")),
            "{wrong:?}"
        );
        // The previous release still answering during the swap is not a failure yet.
        let old = check_prediction(0, &g, &answer(0, 0.1, "v1.1.0"), &v);
        assert!(matches!(old, Err(Check::NotYet(_))), "{old:?}");
        let refused = PredictAnswer::Other {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: "{}".into(),
        };
        assert!(
            matches!(check_prediction(0, &g, &refused, &v), Err(Check::NotYet(m)) if m.contains("503"))
        );
    }

    #[test]
    fn predictions_are_parsed_into_the_wire_type() {
        let ok = parse_prediction(
            StatusCode::OK,
            r#"{"predicted_class":1,"probability":0.625,"model_version":"v1.2.0"}"#,
        );
        assert_eq!(ok, answer(1, 0.625, "v1.2.0"));
        // 200 with a body that is not a prediction is kept as text.
        let odd = parse_prediction(StatusCode::OK, r#"{"class":1}"#);
        assert_eq!(
            odd,
            PredictAnswer::Other {
                status: StatusCode::OK,
                body: r#"{"class":1}"#.into()
            }
        );
        let long = "x".repeat(QUOTE_LIMIT + 50);
        let PredictAnswer::Other { body, .. } = parse_prediction(StatusCode::BAD_GATEWAY, &long)
        else {
            panic!("not a prediction")
        };
        assert_eq!(body.chars().count(), QUOTE_LIMIT + 1);
    }

    #[test]
    fn the_nudge_tells_refusal_from_a_bad_token() {
        assert_eq!(check_nudge(StatusCode::OK, "{}"), Nudge::Accepted);
        assert_eq!(
            check_nudge(
                StatusCode::UNPROCESSABLE_ENTITY,
                " refused model x: it does not load "
            ),
            Nudge::RefusedModel(
                "the server refused to load the release: refused model x: it does not load".into()
            )
        );
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            assert!(
                matches!(check_nudge(status, ""), Nudge::Unauthorized(m) if m.contains(status.as_str()) && m.contains("PREDICT_BUY_ADMIN_TOKEN")),
                "{status}"
            );
        }
        assert!(matches!(
            check_nudge(StatusCode::NOT_FOUND, ""),
            Nudge::Ignored(_)
        ));
    }

    #[test]
    fn only_bad_releases_are_blamed() {
        assert!(FailureKind::WrongAnswer.blames_release());
        assert!(FailureKind::RefusedToLoad.blames_release());
        assert!(!FailureKind::Unreachable.blames_release());
        assert!(!FailureKind::TimedOut.blames_release());
        let f = VerifyFailure {
            endpoint: "http://a/".into(),
            problem: "p".into(),
            kind: FailureKind::WrongAnswer,
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"endpoint": "http://a/", "problem": "p", "kind": "wrong_answer", "wrong_answer": true})
        );
    }

    #[tokio::test]
    async fn a_dead_endpoint_is_unreachable_not_a_bad_release() {
        // Port 9: privileged, so no test server can be listening there.
        let dead = Url::parse("http://127.0.0.1:9/").unwrap();
        let release = ReleaseRecord {
            tag: tag("v1.0.0"),
            model_digest: predict_buy_registry::Digest::of(b"x"),
            image: None,
            git_commit: None,
            notes: String::new(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            created_by: "t".into(),
            metrics: serde_json::Value::Null,
            golden: vec![golden()],
            training: None,
        };
        let verifier = Verifier::new(Duration::from_millis(300))
            .unwrap()
            .with_admin_token(Some("t".into()));
        let mut warnings = Vec::new();
        let failure = verifier
            .verify(&[dead], &release, &mut warnings)
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Unreachable, "{failure}");
        assert!(
            failure
                .problem
                .starts_with("not verified within 0.3s: GET /"),
            "{failure}"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn endpoint_paths_keep_their_prefix() {
        let base = Url::parse("http://h:1/api").unwrap();
        assert_eq!(
            join(&base, "predict").unwrap().as_str(),
            "http://h:1/api/predict"
        );
        assert_eq!(join(&base, "").unwrap().as_str(), "http://h:1/api/");
    }
}
