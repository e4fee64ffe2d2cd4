//! The shared state: the model in use behind an atomic pointer, where models come from,
//! and the reload that swaps one for another without a request noticing.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use predict_buy_api::traffic::CandidateError;
use predict_buy_model::{ArtifactError, Model};
use predict_buy_registry::{CandidateMode, Digest, EnvName, Registry, ReleaseTag};

use crate::candidate::{ShadowFault, ShadowLink, ShadowSettings};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::traffic::{CandidateRoute, ReleaseCounters, Routing};

/// Where models come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// An artifact file, re-read on every reload.
    File(PathBuf),
    /// The desired release of an environment in a registry, followed by polling.
    Registry {
        registry: Arc<Registry>,
        env: EnvName,
    },
    /// One release, pinned for the life of the process (a Kubernetes pod): loaded once
    /// at start, with its model's digest checked against the one the pod template
    /// names, and never changed after.
    Release {
        registry: Arc<Registry>,
        tag: ReleaseTag,
        expected_digest: Option<Digest>,
    },
}

impl ModelSource {
    pub fn describe(&self) -> String {
        match self {
            ModelSource::File(p) => format!("file {}", p.display()),
            ModelSource::Registry { registry, env } => {
                format!("environment `{env}` of registry {}", registry.describe())
            }
            ModelSource::Release { registry, tag, .. } => {
                format!("release {tag} of registry {}", registry.describe())
            }
        }
    }
}

/// Limits that protect the server from its clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond).
    pub body_bytes: usize,
    /// Most instances in one `/predict/batch` request (422 beyond, counted while the
    /// body is parsed).
    pub batch_instances: usize,
    /// Most prediction requests in flight; more are shed with 503.
    pub concurrency: usize,
    /// Longest a request may take, reading its body included (408 beyond). Also the
    /// time a new connection has to start its first request.
    pub request_timeout: Duration,
    /// Most connections open at once; beyond it the server stops accepting until one
    /// closes, so idle sockets cannot take every file descriptor.
    pub max_connections: usize,
    /// After a shutdown signal: how long the server keeps answering (with `/readyz` 503
    /// and `Connection: close`) so a load balancer notices before it stops.
    pub drain: Duration,
    /// The sliding window over which `/drift` and the drift metrics count requests;
    /// zero turns drift counting off.
    pub drift_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            batch_instances: 1_000,
            concurrency: 1_024,
            request_timeout: Duration::from_secs(10),
            max_connections: default_max_connections(),
            drain: Duration::from_secs(5),
            drift_window: crate::drift::DEFAULT_WINDOW,
        }
    }
}

/// File descriptors kept back from connections: the model file, the registry, logs,
/// the listener, and what the runtime opens.
const RESERVED_FDS: u64 = 64;

/// Most connections the process's open-file limit leaves room for, at most 10,000 (a
/// prediction server behind a load balancer rarely needs more; the flag raises it).
pub fn default_max_connections() -> usize {
    #[cfg(unix)]
    let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    #[cfg(not(unix))]
    let fds = u64::MAX;
    let room = fds.saturating_sub(RESERVED_FDS).clamp(16, 10_000);
    usize::try_from(room).unwrap_or(10_000)
}

/// A model ready to serve, with what clients are told about it.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Arc<Model>,
    /// The release tag when served from a registry, else the short digest.
    pub version: String,
    pub release: Option<ReleaseTag>,
    /// `sha256:<hex>`.
    pub digest: String,
    pub loaded_at: String,
    /// The model's input field names, in schema order.
    pub fields: Vec<String>,
    /// `/openapi.json` for this model, rendered on first request.
    pub(crate) openapi: std::sync::OnceLock<bytes::Bytes>,
    /// Live drift counters (`None` when the model has no reference), made on first use.
    pub(crate) drift: std::sync::OnceLock<Option<crate::drift::LiveDrift>>,
}

impl LoadedModel {
    fn new(model: Arc<Model>, release: Option<ReleaseTag>) -> Self {
        let digest = model.digest().to_string();
        let version = match &release {
            Some(tag) => tag.to_string(),
            None => short_digest(&digest).to_string(),
        };
        Self {
            fields: model.input_fields().into_iter().map(|f| f.name).collect(),
            model,
            version,
            release,
            digest,
            loaded_at: jiff::Timestamp::now().to_string(),
            openapi: std::sync::OnceLock::new(),
            drift: std::sync::OnceLock::new(),
        }
    }
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A different model (or release) now serves.
    Swapped { version: String, digest: String },
    /// The source still names the model that serves.
    Unchanged { version: String },
    /// The environment has no release yet; nothing serves.
    NoRelease,
    /// The desired release was refused before and polling does not retry it.
    RefusedBefore { what: String },
}

/// Why a reload was refused; the model that served before keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read model file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refused model {what}: it does not load")]
    Load {
        what: String,
        #[source]
        source: ArtifactError,
    },
    #[error("refused model {what}: its self-check failed")]
    SelfCheck {
        what: String,
        #[source]
        source: ArtifactError,
    },
    #[error(
        "refused release {tag}: its model is {recorded}, but this server was told to expect {expected}"
    )]
    DigestMismatch {
        tag: ReleaseTag,
        expected: Digest,
        recorded: Digest,
    },
    #[error("cannot follow {what}")]
    Registry {
        what: String,
        #[source]
        source: Box<predict_buy_registry::Error>,
    },
}

impl ReloadError {
    /// The message with its causes, for logs and HTTP answers.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    /// A refused artifact, as opposed to a source that could not be reached. Stored
    /// bytes that do not hash to their digest are the artifact's fault, not the
    /// registry's reachability: trying again fetches the same bytes.
    pub fn is_refusal(&self) -> bool {
        match self {
            ReloadError::Load { .. }
            | ReloadError::SelfCheck { .. }
            | ReloadError::DigestMismatch { .. } => true,
            ReloadError::Registry { source, .. } => {
                matches!(**source, predict_buy_registry::Error::Corrupt { .. })
            }
            ReloadError::Read { .. } => false,
        }
    }
}

/// The state every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    current: ArcSwapOption<LoadedModel>,
    /// Prediction requests in flight, at most `limits.concurrency`.
    slots_taken: AtomicUsize,
    /// Requests of any route being answered by this state's app.
    requests: AtomicUsize,
    source: ModelSource,
    limits: Limits,
    admin_token: Option<String>,
    metrics: Metrics,
    /// Serialises reloads; remembers the last refused release so polling does not
    /// download it again every interval.
    reload: tokio::sync::Mutex<Option<String>>,
    last_error: ArcSwapOption<String>,
    /// Set on a shutdown signal: `/readyz` answers 503 and every answer closes its
    /// connection, so clients and load balancers move away before the server stops.
    draining: AtomicBool,
    /// Who answers requests and the counters of that pair, rebuilt whenever the
    /// primary or the candidate changes (see [`crate::traffic`]).
    routing: ArcSwapOption<Routing>,
    /// The environment's candidate, loaded.
    candidate: ArcSwapOption<LoadedCandidate>,
    /// The candidate named by the environment that could not be loaded.
    candidate_error: ArcSwapOption<CandidateError>,
    /// Whether that failure is worth another try at the next poll: a registry that
    /// could not be read is, a refused artifact is not (it would be refused again).
    candidate_retry: AtomicBool,
    /// The environment whose candidate record a pinned server follows.
    candidate_env: std::sync::OnceLock<EnvName>,
    shadow: Arc<ShadowSettings>,
}

/// A candidate ready to answer or shadow.
struct LoadedCandidate {
    loaded: Arc<LoadedModel>,
    mode: CandidateMode,
}

impl AppState {
    /// State with nothing loaded yet; call [`AppState::reload`] to load from `source`.
    pub fn new(source: ModelSource, limits: Limits, admin_token: Option<String>) -> Self {
        let admin_token = admin_token.filter(|t| !t.trim().is_empty());
        Self {
            inner: Arc::new(Shared {
                current: ArcSwapOption::empty(),
                slots_taken: AtomicUsize::new(0),
                requests: AtomicUsize::new(0),
                metrics: Metrics::new(&limits),
                source,
                limits,
                admin_token,
                reload: tokio::sync::Mutex::new(None),
                last_error: ArcSwapOption::empty(),
                draining: AtomicBool::new(false),
                routing: ArcSwapOption::empty(),
                candidate: ArcSwapOption::empty(),
                candidate_error: ArcSwapOption::empty(),
                candidate_retry: AtomicBool::new(false),
                candidate_env: std::sync::OnceLock::new(),
                shadow: Arc::new(ShadowSettings::default()),
            }),
        }
    }

    /// The model serving now, if any.
    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.inner.current.load_full()
    }

    pub(crate) fn with_current<R>(&self, f: impl FnOnce(Option<&LoadedModel>) -> R) -> R {
        let guard = self.inner.current.load();
        f(guard.as_deref())
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn source(&self) -> &ModelSource {
        &self.inner.source
    }

    pub(crate) fn admin_token(&self) -> Option<&str> {
        self.inner.admin_token.as_deref()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether a shutdown signal came and the server is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// A place among the prediction requests in flight, if one is free. Handlers take
    /// it once the body is read; it is public so that a test or an embedding program
    /// can occupy places deterministically.
    pub fn try_slot(&self) -> Option<Slot> {
        let limit = self.inner.limits.concurrency;
        self.inner
            .slots_taken
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Prediction requests holding a place under [`Limits::concurrency`] right now.
    /// Unlike the `http_requests_in_flight` gauge, which the process's metrics recorder
    /// shares among every app in it, this counts this state's requests only.
    pub fn predictions_in_flight(&self) -> usize {
        self.inner.slots_taken.load(Ordering::Acquire)
    }

    /// Requests of any route this state's app is answering now (from the moment their
    /// headers are read), unlike the process-wide `http_requests_in_flight` gauge.
    pub fn requests_in_flight(&self) -> usize {
        self.inner.requests.load(Ordering::Acquire)
    }

    /// Counts a request until the guard drops.
    pub(crate) fn enter(&self) -> Entered {
        self.inner.requests.fetch_add(1, Ordering::AcqRel);
        Entered(self.clone())
    }

    /// The last reload failure, cleared by the next success.
    pub fn last_error(&self) -> Option<Arc<String>> {
        self.inner.last_error.load_full()
    }

    /// Loads from the source and swaps the new model in if it loads and passes its
    /// self-check; otherwise the serving model stays. `force` retries a release that was
    /// refused before (polling passes `false`; SIGHUP and `/admin/reload` pass `true`).
    pub async fn reload(&self, force: bool) -> Result<ReloadOutcome, ReloadError> {
        let mut refused = self.inner.reload.lock().await;
        let result = match &self.inner.source {
            ModelSource::File(path) => self.reload_file(path).await,
            ModelSource::Registry { registry, env } => {
                self.reload_registry(registry, env, force, &mut refused)
                    .await
            }
            ModelSource::Release {
                registry,
                tag,
                expected_digest,
            } => {
                self.reload_pinned(registry, tag, expected_digest.as_ref())
                    .await
            }
        };
        match &result {
            Ok(ReloadOutcome::Swapped { version, digest }) => {
                tracing::info!(%version, %digest, "serving a new model");
                self.inner.last_error.store(None);
                self.inner.metrics.reload("swapped");
            }
            Ok(_) => {}
            // A registry that does not exist yet, before any model served, is a server
            // started ahead of its first deploy: not ready, which `/readyz` says, and
            // not a refusal.
            Err(e) if self.current().is_none() && !e.is_refusal() => {
                tracing::info!(error = %e.chain(), "no model to serve yet");
                self.inner.last_error.store(Some(Arc::new(e.chain())));
            }
            Err(e) => {
                tracing::error!(error = %e.chain(), "reload refused; the model serving before, if any, keeps serving");
                self.inner.last_error.store(Some(Arc::new(e.chain())));
                self.inner.metrics.reload("refused");
            }
        }
        // Under the same lock as the primary, so the routing is rebuilt by one task at
        // a time.
        self.refresh_candidate().await;
        result
    }

    async fn reload_file(&self, path: &std::path::Path) -> Result<ReloadOutcome, ReloadError> {
        let what = path.display().to_string();
        let path = path.to_path_buf();
        // Read on the thread that parses: the file's buffer is then allocated and
        // freed by one thread, whose allocator can hand it straight back.
        let read =
            move || std::fs::read(&path).map_err(|source| ReloadError::Read { path, source });
        let model = load_checked(read, what).await?;
        if let Some(cur) = self.current()
            && cur.digest == model.digest()
        {
            return Ok(ReloadOutcome::Unchanged {
                version: cur.version.clone(),
            });
        }
        Ok(self.swap(LoadedModel::new(Arc::new(model), None)))
    }

    async fn reload_registry(
        &self,
        registry: &Registry,
        env: &EnvName,
        force: bool,
        refused: &mut Option<String>,
    ) -> Result<ReloadOutcome, ReloadError> {
        let what = format!("environment `{env}` of registry {}", registry.describe());
        let registry_error = |source| ReloadError::Registry {
            what: what.clone(),
            source: Box::new(source),
        };
        let state = registry.env_state(env).await.map_err(registry_error)?;
        let Some(tag) = state.and_then(|s| s.desired) else {
            if let Some(cur) = self.current() {
                // A cleared environment keeps its last model: stopping would fail
                // every request, and clearing is not a deploy.
                return Ok(ReloadOutcome::Unchanged {
                    version: cur.version.clone(),
                });
            }
            return Ok(ReloadOutcome::NoRelease);
        };
        let current = self.current();
        if let Some(cur) = &current
            && cur.release.as_ref() == Some(&tag)
        {
            return Ok(ReloadOutcome::Unchanged {
                version: cur.version.clone(),
            });
        }
        let tag_text = tag.to_string();
        if !force && refused.as_deref() == Some(tag_text.as_str()) {
            return Ok(ReloadOutcome::RefusedBefore { what: tag_text });
        }
        let record = registry.get_release(&tag).await.map_err(registry_error)?;
        let digest = record.model_digest.to_string();
        // A release of the model already serving swaps only the tag.
        if let Some(cur) = &current
            && cur.digest == digest
        {
            *refused = None;
            return Ok(self.swap(LoadedModel::new(cur.model.clone(), Some(tag))));
        }
        let result = async {
            let bytes = registry
                .pull(&record.model_digest)
                .await
                .map_err(registry_error)?;
            load_checked(move || Ok(bytes), format!("{digest} of release {tag}")).await
        }
        .await;
        match result {
            Ok(model) => {
                *refused = None;
                Ok(self.swap(LoadedModel::new(Arc::new(model), Some(tag))))
            }
            Err(e) => {
                if e.is_refusal()
                    || matches!(&e, ReloadError::Registry { source, .. } if is_corrupt(source))
                {
                    *refused = Some(tag_text);
                }
                Err(e)
            }
        }
    }

    /// Loads a pinned release once; after that its model is what the process serves
    /// until it exits, whatever the registry says.
    async fn reload_pinned(
        &self,
        registry: &Registry,
        tag: &ReleaseTag,
        expected: Option<&Digest>,
    ) -> Result<ReloadOutcome, ReloadError> {
        if let Some(cur) = self.current() {
            return Ok(ReloadOutcome::Unchanged {
                version: cur.version.clone(),
            });
        }
        let what = format!("release {tag} of registry {}", registry.describe());
        let registry_error = |source| ReloadError::Registry {
            what: what.clone(),
            source: Box::new(source),
        };
        let record = registry.get_release(tag).await.map_err(registry_error)?;
        if let Some(expected) = expected
            && *expected != record.model_digest
        {
            return Err(ReloadError::DigestMismatch {
                tag: tag.clone(),
                expected: expected.clone(),
                recorded: record.model_digest,
            });
        }
        // The registry checks the bytes against their digest as it reads them.
        let bytes = registry
            .pull(&record.model_digest)
            .await
            .map_err(registry_error)?;
        let model = load_checked(
            move || Ok(bytes),
            format!("{} of release {tag}", record.model_digest),
        )
        .await?;
        Ok(self.swap(LoadedModel::new(Arc::new(model), Some(tag.clone()))))
    }

    fn swap(&self, loaded: LoadedModel) -> ReloadOutcome {
        let outcome = ReloadOutcome::Swapped {
            version: loaded.version.clone(),
            digest: loaded.digest.clone(),
        };
        self.inner.current.store(Some(Arc::new(loaded)));
        self.rebuild_routing();
        outcome
    }
}

/// The candidate: following the environment's record, and the routing requests use.
impl AppState {
    /// Make a server pinned to one release (a Kubernetes pod) follow `env`'s candidate
    /// record too; a server following an environment does so already. Only the first
    /// call counts.
    pub fn follow_candidates_of(&self, env: EnvName) {
        let _ = self.inner.candidate_env.set(env);
    }

    /// The environment whose candidate this server loads, if any.
    pub fn candidate_env(&self) -> Option<&EnvName> {
        match &self.inner.source {
            ModelSource::Registry { env, .. } => Some(env),
            _ => self.inner.candidate_env.get(),
        }
    }

    fn source_registry(&self) -> Option<&Registry> {
        match &self.inner.source {
            ModelSource::Registry { registry, .. } | ModelSource::Release { registry, .. } => {
                Some(registry)
            }
            ModelSource::File(_) => None,
        }
    }

    /// The candidate loaded now: its version and mode.
    pub fn candidate(&self) -> Option<(String, CandidateMode)> {
        self.inner
            .candidate
            .load()
            .as_deref()
            .map(|c| (c.loaded.version.clone(), c.mode.clone()))
    }

    /// Make every shadow scoring fail this way from now on (`None` ends it): a fault
    /// drill, and how tests prove a broken candidate costs the primary nothing.
    pub fn set_shadow_fault(&self, fault: Option<ShadowFault>) {
        self.inner.shadow.fault.store(fault.map(Arc::new));
    }

    /// Longest a shadow may take over one request before it counts as an error
    /// (default [`crate::candidate::DEFAULT_SHADOW_BUDGET`]).
    pub fn set_shadow_budget(&self, budget: Duration) {
        let us = u64::try_from(budget.as_micros()).unwrap_or(u64::MAX).max(1);
        self.inner.shadow.budget_us.store(us, Ordering::Relaxed);
    }

    pub(crate) fn routing(&self) -> arc_swap::Guard<Option<Arc<Routing>>> {
        self.inner.routing.load()
    }

    pub(crate) fn candidate_error(&self) -> Option<Arc<CandidateError>> {
        self.inner.candidate_error.load_full()
    }

    /// Fresh counters for the current pair of releases.
    fn rebuild_routing(&self) {
        let Some(primary) = self.current() else {
            self.inner.routing.store(None);
            return;
        };
        let candidate = self.inner.candidate.load_full().and_then(|c| {
            let counts = Arc::new(ReleaseCounters::new());
            let shadow = match c.mode {
                CandidateMode::Shadow => match ShadowLink::start(
                    c.loaded.clone(),
                    counts.clone(),
                    self.inner.shadow.clone(),
                ) {
                    Ok(link) => Some(link),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the shadow's worker thread; no shadow runs");
                        return None;
                    }
                },
                CandidateMode::Canary { .. } => None,
            };
            Some(CandidateRoute {
                loaded: c.loaded.clone(),
                mode: c.mode.clone(),
                counts,
                shadow,
            })
        });
        self.inner.routing.store(Some(Arc::new(Routing {
            primary,
            primary_counts: ReleaseCounters::new(),
            since: jiff::Timestamp::now().to_string(),
            candidate,
        })));
    }

    /// Reads the environment's candidate record and loads, changes or drops the
    /// candidate to match. A registry that cannot be read keeps what is loaded (a blip
    /// must not end a shadow); a candidate that does not load leaves the primary alone
    /// and is reported in `/traffic`, logged once, and not retried until its record
    /// changes.
    async fn refresh_candidate(&self) {
        let (Some(env), Some(registry)) = (self.candidate_env(), self.source_registry()) else {
            return;
        };
        let record = match registry.candidate(env).await {
            Ok(record) => record,
            Err(e) => {
                tracing::debug!(error = %e, %env, "cannot read the candidate record; keeping the candidate as it is");
                return;
            }
        };
        let Some(record) = record else {
            if self.inner.candidate.load().is_some() || self.candidate_error().is_some() {
                tracing::info!(%env, "the candidate record is gone; dropping the candidate");
                self.inner.candidate.store(None);
                self.inner.candidate_error.store(None);
                self.rebuild_routing();
            }
            return;
        };
        let tag = record.release.to_string();
        let mode_name = record.mode.name();
        if let Some(c) = self.inner.candidate.load().as_deref()
            && c.loaded.release.as_ref() == Some(&record.release)
            && c.mode == record.mode
        {
            return;
        }
        let failed_before = self
            .candidate_error()
            .is_some_and(|e| e.release == tag && e.mode == mode_name);
        if failed_before && !self.inner.candidate_retry.load(Ordering::Relaxed) {
            return;
        }
        match self.load_candidate(registry, &record.release).await {
            Ok(loaded) => {
                tracing::info!(release = %tag, mode = mode_name, "candidate loaded beside the primary");
                self.inner.candidate_error.store(None);
                self.inner.candidate.store(Some(Arc::new(LoadedCandidate {
                    loaded,
                    mode: record.mode,
                })));
                self.rebuild_routing();
            }
            Err(e) => {
                // Logged once per candidate, however many polls retry it.
                if !failed_before {
                    tracing::error!(release = %tag, mode = mode_name, error = %e.chain(), "cannot load the candidate; the primary serves alone");
                }
                self.inner
                    .candidate_retry
                    .store(!e.is_refusal(), Ordering::Relaxed);
                self.inner.candidate.store(None);
                self.inner
                    .candidate_error
                    .store(Some(Arc::new(CandidateError {
                        release: tag,
                        mode: mode_name.to_string(),
                        error: e.chain(),
                    })));
                // Counters restart only when the pair changes, not at every retry.
                if !failed_before {
                    self.rebuild_routing();
                }
            }
        }
    }

    async fn load_candidate(
        &self,
        registry: &Registry,
        tag: &ReleaseTag,
    ) -> Result<Arc<LoadedModel>, ReloadError> {
        let what = format!("candidate {tag} of registry {}", registry.describe());
        let registry_error = |source| ReloadError::Registry {
            what: what.clone(),
            source: Box::new(source),
        };
        let record = registry.get_release(tag).await.map_err(registry_error)?;
        // The same model as the primary's is shared, not loaded twice.
        if let Some(cur) = self.current()
            && cur.digest == record.model_digest.to_string()
        {
            return Ok(Arc::new(LoadedModel::new(
                cur.model.clone(),
                Some(tag.clone()),
            )));
        }
        let bytes = registry
            .pull(&record.model_digest)
            .await
            .map_err(registry_error)?;
        let model = load_checked(
            move || Ok(bytes),
            format!("{} of candidate {tag}", record.model_digest),
        )
        .await?;
        Ok(Arc::new(LoadedModel::new(
            Arc::new(model),
            Some(tag.clone()),
        )))
    }
}

/// A request being answered; see [`AppState::requests_in_flight`].
pub(crate) struct Entered(AppState);

impl Entered {
    pub(crate) fn state(&self) -> &AppState {
        &self.0
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.inner.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place among the prediction requests in flight ([`Limits::concurrency`]), held
/// until dropped. Taken after the request body has been read and size-checked: a
/// client trickling its body must not hold one (a thousand of them would shed every
/// real prediction). Without a free place the request is shed with 503: queueing would
/// only make every waiting client slower.
pub struct Slot(AppState);

impl Slot {
    /// Takes a place for a request of `state`, or counts the request as shed.
    pub(crate) fn take(state: &AppState) -> Result<Slot, ApiError> {
        state.try_slot().ok_or_else(|| {
            state.metrics().shed();
            ApiError::Overloaded
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.inner.slots_taken.fetch_sub(1, Ordering::Release);
    }
}

fn is_corrupt(e: &predict_buy_registry::Error) -> bool {
    matches!(
        e,
        predict_buy_registry::Error::Corrupt { .. }
            | predict_buy_registry::Error::UnknownDigest { .. }
    )
}

/// Run after every model load (see [`after_each_load`]).
static AFTER_LOAD: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers a function to run after each model load, loaded or refused, on the
/// thread that loaded it and once the artifact's bytes and the load's other
/// temporary buffers are freed. The `predict-buy` binary hands its allocator's freed
/// memory back to the system there: a load frees tens of megabytes (the file, the
/// parse) that a server which loads once would otherwise keep resident for its whole
/// life. Only the first registration counts.
pub fn after_each_load(hook: fn()) {
    let _ = AFTER_LOAD.set(hook);
}

/// Reads (with `read`), parses and self-checks an artifact off the async threads. The
/// bytes are owned, so they are freed as soon as the parse no longer needs them,
/// before the self-check.
async fn load_checked<B, R>(read: R, what: String) -> Result<Model, ReloadError>
where
    B: AsRef<[u8]>,
    R: FnOnce() -> Result<B, ReloadError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let bytes = read()?;
        let parsed = Model::from_bytes(bytes.as_ref());
        drop(bytes);
        let checked = parsed
            .map_err(|source| ReloadError::Load {
                what: what.clone(),
                source,
            })
            .and_then(|model| {
                model
                    .self_check()
                    .map_err(|source| ReloadError::SelfCheck { what, source })?;
                Ok(model)
            });
        if let Some(hook) = AFTER_LOAD.get() {
            hook();
        }
        checked
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digest_is_twelve_hex_digits() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123456789abcdef"),
            "0123456789ab"
        );
        assert_eq!(short_digest("abc"), "abc");
    }
}
