//! What runs in an environment, for `predict-buy status`.

use jiff::Timestamp;
use predict_buy_registry::{EnvName, EnvState, HistoryEntry, Lease, Registry};
use serde::Serialize;

use crate::error::Result;
use crate::history;

/// An environment's state, last history entry and lease, read at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub env: EnvName,
    pub state: Option<EnvState>,
    pub last: Option<HistoryEntry>,
    /// The lease record if not released; it may be expired (see `lease_active`).
    pub lease: Option<Lease>,
    pub lease_active: bool,
    /// The `started` entry of a deploy that never finished, if any.
    pub interrupted: Option<HistoryEntry>,
    pub checked_at: Timestamp,
}

/// Read an environment's status.
pub async fn status(registry: &Registry, env: &EnvName) -> Result<Status> {
    let state = registry.env_state(env).await?;
    let entries = registry.history(env).await?;
    let lease = registry.inspect_lease(env).await?;
    let now = Timestamp::now();
    Ok(Status {
        env: env.clone(),
        state,
        interrupted: history::interrupted(&entries, lease.as_ref(), now).cloned(),
        last: entries.last().cloned(),
        lease_active: lease.as_ref().is_some_and(|l| l.is_active(now)),
        lease,
        checked_at: now,
    })
}
