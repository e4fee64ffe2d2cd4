//! Environment records under `registry-v1/envs/<env>/`: the desired release
//! (`state.json`), an append-only history (`history/<seq>.json`) and a deploy lease
//! (`lease.json`).

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Registry;
use crate::error::{Error, Result};
use crate::names::{EnvName, ReleaseTag};
use crate::store::Cas;

/// Give up a compare-and-swap loop after this many lost races.
const MAX_ATTEMPTS: u32 = 1000;
/// History entries read at once by [`Registry::history`].
const READ_CONCURRENCY: usize = 32;

/// What should run in an environment. `generation` grows by one on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvState {
    pub env: EnvName,
    /// The release the environment should run; `None` after it was cleared.
    pub desired: Option<ReleaseTag>,
    /// The desired release before the last change.
    pub previous: Option<ReleaseTag>,
    pub generation: u64,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// How a deploy step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Started,
    Verified,
    /// The release misbehaved: a wrong golden answer, or a model that does not load.
    Failed,
    RolledBack,
    Interrupted,
    /// The environment could not be checked (an endpoint unreachable, no answer from
    /// the release in time). Says nothing about the release, good or bad; the entry's
    /// message has the reason. Histories written before it existed never contain it.
    Unverified,
    /// A shadow of this release began scoring beside the serving one (`shadow start`).
    /// Like the two below, no verdict on any release.
    ShadowStarted,
    /// The shadow of this release ended (`shadow stop`), with its summary in the message.
    ShadowStopped,
}

/// One line of an environment's history. Entries are never changed once written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// 1, 2, 3, … with no gaps under normal operation.
    pub seq: u64,
    pub release: Option<ReleaseTag>,
    pub previous: Option<ReleaseTag>,
    pub time: Timestamp,
    pub actor: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub message: String,
}

/// The caller's part of a [`HistoryEntry`]; the registry adds `seq` and `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHistoryEntry {
    pub release: Option<ReleaseTag>,
    pub previous: Option<ReleaseTag>,
    pub actor: String,
    pub outcome: Outcome,
    pub message: String,
}

/// An expiring lock on an environment, taken for the length of a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub env: EnvName,
    /// Who holds it, e.g. `alice@laptop (pid 4242)`.
    pub holder: String,
    /// What it is held for, e.g. `deploy v1.2.0`.
    pub operation: String,
    /// Unique per acquisition, so a holder can tell its own lease from a later one.
    pub token: String,
    pub acquired_at: Timestamp,
    pub expires_at: Timestamp,
    /// Set when the holder released it.
    #[serde(default)]
    pub released_at: Option<Timestamp>,
}

impl Lease {
    /// True once `expires_at` has passed.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// True while the lease blocks other holders: not released and not expired.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.released_at.is_none() && !self.is_expired(now)
    }
}

fn state_rel(env: &EnvName) -> String {
    format!("envs/{env}/state.json")
}

fn lease_rel(env: &EnvName) -> String {
    format!("envs/{env}/lease.json")
}

fn history_dir(env: &EnvName) -> String {
    format!("envs/{env}/history")
}

fn history_rel(env: &EnvName, seq: u64) -> String {
    format!("envs/{env}/history/{seq:020}.json")
}

fn to_json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(value).expect("records serialise"))
}

fn add(now: Timestamp, ttl: Duration) -> Timestamp {
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
    now.checked_add(ttl).unwrap_or(Timestamp::MAX)
}

fn new_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{}-{n}",
        std::process::id(),
        Timestamp::now().as_nanosecond()
    )
}

impl Registry {
    /// The environments that have any record, sorted.
    pub async fn list_envs(&self) -> Result<Vec<EnvName>> {
        let mut envs: Vec<EnvName> = self
            .store
            .list_dirs("envs")
            .await?
            .iter()
            .filter_map(|name| EnvName::parse(name).ok())
            .collect();
        envs.sort();
        Ok(envs)
    }

    /// The environment's desired release; `None` if it was never set.
    pub async fn env_state(&self, env: &EnvName) -> Result<Option<EnvState>> {
        let rel = state_rel(env);
        match self.store.get(&rel).await? {
            Some((bytes, _)) => Ok(Some(self.decode(&rel, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Point the environment at `desired` (which must be a stored release, or `None`
    /// to clear it) and bump the generation.
    ///
    /// With `expected_generation = Some(g)` the change is applied only if the stored
    /// generation is still `g` (0 for a never-set environment), else
    /// [`Error::Conflict`]. With `None` the change is applied on top of whatever is
    /// current; concurrent callers are serialised, none is lost.
    pub async fn set_desired(
        &self,
        env: &EnvName,
        desired: Option<&ReleaseTag>,
        actor: &str,
        expected_generation: Option<u64>,
    ) -> Result<EnvState> {
        if let Some(tag) = desired {
            // Fails with UnknownRelease if the tag was never released.
            self.get_release(tag).await?;
        }
        let rel = state_rel(env);
        for _ in 0..MAX_ATTEMPTS {
            let current = self.store.get(&rel).await?;
            let (old, version) = match &current {
                Some((bytes, version)) => {
                    (Some(self.decode::<EnvState>(&rel, bytes)?), Some(version))
                }
                None => (None, None),
            };
            let generation = old.as_ref().map_or(0, |s| s.generation);
            if let Some(expected) = expected_generation
                && expected != generation
            {
                return Err(Error::Conflict {
                    env: env.clone(),
                    expected,
                    actual: generation,
                });
            }
            let next = EnvState {
                env: env.clone(),
                desired: desired.cloned(),
                previous: old.and_then(|s| s.desired),
                generation: generation + 1,
                updated_at: Timestamp::now(),
                updated_by: actor.to_string(),
            };
            let json = to_json(&next);
            let outcome = match version {
                Some(v) => self.store.update(&rel, json, v).await?,
                None => self.store.create(&rel, json).await?,
            };
            if outcome == Cas::Written {
                return Ok(next);
            }
        }
        Err(Error::Contention {
            object: rel,
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Append an entry to the environment's history and return it with its `seq`.
    ///
    /// Each entry is its own object, written with a conditional create on the next free
    /// sequence number, so concurrent appenders never overwrite each other: the loser
    /// of a race moves on to the next number.
    pub async fn append_history(
        &self,
        env: &EnvName,
        entry: NewHistoryEntry,
    ) -> Result<HistoryEntry> {
        let mut seq = self.last_history_seq(env).await? + 1;
        for _ in 0..MAX_ATTEMPTS {
            let full = HistoryEntry {
                seq,
                release: entry.release.clone(),
                previous: entry.previous.clone(),
                time: Timestamp::now(),
                actor: entry.actor.clone(),
                outcome: entry.outcome,
                message: entry.message.clone(),
            };
            match self
                .store
                .create(&history_rel(env, seq), to_json(&full))
                .await?
            {
                Cas::Written => return Ok(full),
                // Skip past everything written meanwhile rather than probing one by one.
                Cas::Lost => seq = (self.last_history_seq(env).await? + 1).max(seq + 1),
            }
        }
        Err(Error::Contention {
            object: history_dir(env),
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn history_seqs(&self, env: &EnvName) -> Result<Vec<(u64, String)>> {
        let mut seqs: Vec<(u64, String)> = self
            .store
            .list(&history_dir(env))
            .await?
            .into_iter()
            .filter_map(|(rel, _)| {
                let name = rel.rsplit('/').next()?.strip_suffix(".json")?;
                Some((name.parse().ok()?, rel))
            })
            .collect();
        seqs.sort();
        Ok(seqs)
    }

    async fn last_history_seq(&self, env: &EnvName) -> Result<u64> {
        Ok(self.history_seqs(env).await?.last().map_or(0, |(s, _)| *s))
    }

    /// The environment's whole history, oldest first.
    pub async fn history(&self, env: &EnvName) -> Result<Vec<HistoryEntry>> {
        let seqs = self.history_seqs(env).await?;
        let entries: Vec<Option<HistoryEntry>> = futures::stream::iter(seqs)
            .map(|(_, rel)| async move {
                match self.store.get(&rel).await? {
                    Some((bytes, _)) => Ok(Some(self.decode(&rel, &bytes)?)),
                    None => Ok(None),
                }
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(entries.into_iter().flatten().collect())
    }

    /// The release of the newest `verified` history entry whose release is not
    /// `excluding`: the rollback target when `excluding` is what runs now.
    pub async fn last_verified(
        &self,
        env: &EnvName,
        excluding: Option<&ReleaseTag>,
    ) -> Result<Option<ReleaseTag>> {
        Ok(self
            .history(env)
            .await?
            .into_iter()
            .rev()
            .filter(|e| e.outcome == Outcome::Verified)
            .filter_map(|e| e.release)
            .find(|r| Some(r) != excluding))
    }

    /// Take the environment's lease for `ttl`. Fails with [`Error::LeaseHeld`] while
    /// another holder's lease is active; an expired or released lease is taken over.
    pub async fn acquire_lease(
        &self,
        env: &EnvName,
        holder: &str,
        operation: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let rel = lease_rel(env);
        for _ in 0..MAX_ATTEMPTS {
            let now = Timestamp::now();
            let lease = Lease {
                env: env.clone(),
                holder: holder.to_string(),
                operation: operation.to_string(),
                token: new_token(),
                acquired_at: now,
                expires_at: add(now, ttl),
                released_at: None,
            };
            let outcome = match self.store.get(&rel).await? {
                None => self.store.create(&rel, to_json(&lease)).await?,
                Some((bytes, version)) => {
                    let current: Lease = self.decode(&rel, &bytes)?;
                    if current.is_active(now) {
                        return Err(Error::LeaseHeld {
                            env: env.clone(),
                            holder: current.holder,
                            operation: current.operation,
                            since: current.acquired_at,
                            expires_at: current.expires_at,
                        });
                    }
                    self.store.update(&rel, to_json(&lease), &version).await?
                }
            };
            if outcome == Cas::Written {
                return Ok(lease);
            }
        }
        Err(Error::Contention {
            object: rel,
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Extend a lease we hold to `ttl` from now. Fails with [`Error::LeaseLost`] if it
    /// was released, broken or taken over meanwhile.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let renewed = self
            .rewrite_own_lease(lease, |l| l.expires_at = add(Timestamp::now(), ttl))
            .await?;
        Ok(renewed)
    }

    /// Give a lease back. Fails with [`Error::LeaseLost`] if it is no longer ours.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.rewrite_own_lease(lease, |l| l.released_at = Some(Timestamp::now()))
            .await?;
        Ok(())
    }

    async fn rewrite_own_lease(&self, lease: &Lease, change: impl Fn(&mut Lease)) -> Result<Lease> {
        let rel = lease_rel(&lease.env);
        let lost = || Error::LeaseLost {
            env: lease.env.clone(),
            holder: lease.holder.clone(),
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some((bytes, version)) = self.store.get(&rel).await? else {
                return Err(lost());
            };
            let mut current: Lease = self.decode(&rel, &bytes)?;
            if current.token != lease.token || current.released_at.is_some() {
                return Err(lost());
            }
            change(&mut current);
            if self.store.update(&rel, to_json(&current), &version).await? == Cas::Written {
                return Ok(current);
            }
        }
        Err(Error::Contention {
            object: rel,
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The environment's lease record, if one exists and was not released. It may be
    /// expired: check [`Lease::is_active`].
    pub async fn inspect_lease(&self, env: &EnvName) -> Result<Option<Lease>> {
        let rel = lease_rel(env);
        let Some((bytes, _)) = self.store.get(&rel).await? else {
            return Ok(None);
        };
        let lease: Lease = self.decode(&rel, &bytes)?;
        Ok(lease.released_at.is_none().then_some(lease))
    }

    /// Remove the environment's lease whoever holds it, for recovering from a crashed
    /// deploy. Returns the lease that was broken, if any. The former holder's next
    /// renew or release fails with [`Error::LeaseLost`].
    pub async fn break_lease(&self, env: &EnvName) -> Result<Option<Lease>> {
        // An unreadable lease must still be breakable: that is what breaking is for.
        let previous = match self.inspect_lease(env).await {
            Ok(previous) => previous,
            Err(Error::Decode { .. }) => None,
            Err(e) => return Err(e),
        };
        self.store.delete(&lease_rel(env)).await?;
        Ok(previous)
    }
}
