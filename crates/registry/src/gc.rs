//! Leftovers of interrupted writes, and sweeping them.
//!
//! A writer killed mid-write leaves the registry readable (see the crate docs), but
//! not always clean: on disk a staging file `<key>#<n>` that was never renamed into
//! place, on S3 a multipart upload never completed nor aborted. Neither is visible to
//! readers. [`Registry::interrupted_writes`] lists them and
//! [`Registry::clean_interrupted_writes`] removes those older than a threshold.
//!
//! A leftover cannot be told from a write still in progress by its name, only by its
//! age, so the threshold must exceed the longest write: a staging file's age is the
//! time since it was last written to (a live writer keeps refreshing it), a multipart
//! upload's the time since it started. Artifacts, releases, state, history and
//! leases are never touched.
//!
//! Data objects are the one stored thing gc may remove whole: a data set pushed and
//! never named by a release, once it is older than its own threshold (meant to be
//! days: data is pushed, then trained on, then released). A data object that any
//! release names is never removed. Releases are listed again just before removing,
//! so a release created while gc ran protects its data; what remains is the window
//! between that second listing and the delete (milliseconds, against a threshold of
//! days since the data was pushed).

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use std::collections::BTreeSet;

use crate::Registry;
use crate::data::DataObject;
use crate::error::Result;
use crate::names::Digest;

/// One leftover of an interrupted write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterruptedWrite {
    /// The key that was being written, e.g. `registry-v1/objects/sha256/<hex>`.
    pub target: String,
    /// Bytes held, when the backend tells (a staging file's size; S3 does not list
    /// the size of an unfinished upload).
    pub size: Option<u64>,
    /// The last write into a staging file, or when a multipart upload started.
    pub last_activity: Timestamp,
    #[serde(skip)]
    pub(crate) leftover: Leftover,
}

impl InterruptedWrite {
    /// How long ago it was last active (zero if its clock is ahead of ours).
    pub fn age(&self, now: Timestamp) -> Duration {
        Duration::try_from(now.duration_since(self.last_activity)).unwrap_or(Duration::ZERO)
    }

    /// Where the leftover lives: a staging file's path, or `upload <id>` on S3.
    pub fn location(&self) -> String {
        match &self.leftover {
            Leftover::File { path } => path.display().to_string(),
            Leftover::Upload { upload_id, .. } => format!("multipart upload {upload_id}"),
        }
    }
}

/// How the backend names a leftover, so it can be removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leftover {
    /// A staging file on disk.
    File { path: PathBuf },
    /// An unfinished S3 multipart upload of the full object key `key`.
    Upload { key: String, upload_id: String },
}

/// Whether [`Registry::clean_interrupted_writes`] removes what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcMode {
    /// Report what would be removed; remove nothing.
    DryRun,
    Remove,
}

/// What [`Registry::clean_interrupted_writes`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Old enough to be abandoned: removed (or, in a dry run, to be removed).
    pub removed: Vec<InterruptedWrite>,
    /// Younger than the threshold, or active again while the sweep ran: a writer may
    /// still own them, so they stay.
    pub kept: Vec<InterruptedWrite>,
}

impl GcReport {
    /// Bytes freed by the removed leftovers whose size is known.
    pub fn bytes_freed(&self) -> u64 {
        self.removed.iter().filter_map(|w| w.size).sum()
    }
}

impl Registry {
    /// Every leftover of an interrupted write, sorted by the key it was writing.
    pub async fn interrupted_writes(&self) -> Result<Vec<InterruptedWrite>> {
        self.store.list_staging().await
    }

    /// Remove leftovers of interrupted writes that have been inactive for at least
    /// `min_age`; pass an hour or more so writes in progress are left alone. Nothing
    /// but staging files and unfinished uploads is ever removed.
    pub async fn clean_interrupted_writes(
        &self,
        min_age: Duration,
        mode: GcMode,
    ) -> Result<GcReport> {
        let now = Timestamp::now();
        let mut report = GcReport::default();
        for write in self.store.list_staging().await? {
            if write.age(now) < min_age {
                report.kept.push(write);
                continue;
            }
            match mode {
                GcMode::DryRun => report.removed.push(write),
                GcMode::Remove => {
                    if self.store.remove_staging(&write, min_age).await? {
                        report.removed.push(write);
                    } else if self.store.list_staging().await?.contains(&write) {
                        // Still there but written to since we listed it.
                        report.kept.push(write);
                    }
                }
            }
        }
        Ok(report)
    }
}

/// What [`Registry::collect_unreferenced_data`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataGcReport {
    /// Named by no release and old enough: removed (or, in a dry run, to be removed).
    pub removed: Vec<DataObject>,
    /// Named by at least one release: kept whatever their age.
    pub named: Vec<DataObject>,
    /// Named by no release but younger than the threshold: kept, a release may come.
    pub young: Vec<DataObject>,
}

impl DataGcReport {
    /// Stored (compressed) bytes freed by the removed objects.
    pub fn bytes_freed(&self) -> u64 {
        self.removed.iter().map(|d| d.stored_size).sum()
    }
}

impl Registry {
    /// Every data digest some release names.
    pub async fn data_named_by_releases(&self) -> Result<BTreeSet<Digest>> {
        Ok(self
            .list_releases()
            .await?
            .iter()
            .flat_map(|r| r.data_digests().cloned().collect::<Vec<_>>())
            .collect())
    }

    /// Remove data objects that no release names and that were stored at least
    /// `min_age` ago. Data a release names is never removed (see the module docs for
    /// how a release created meanwhile is honoured).
    pub async fn collect_unreferenced_data(
        &self,
        min_age: Duration,
        mode: GcMode,
    ) -> Result<DataGcReport> {
        let now = Timestamp::now();
        let named = self.data_named_by_releases().await?;
        let mut report = DataGcReport::default();
        let mut candidates = Vec::new();
        for object in self.list_data().await? {
            let age =
                Duration::try_from(now.duration_since(object.stored_at)).unwrap_or(Duration::ZERO);
            if named.contains(&object.digest) {
                report.named.push(object);
            } else if age < min_age {
                report.young.push(object);
            } else {
                candidates.push(object);
            }
        }
        if candidates.is_empty() {
            return Ok(report);
        }
        let named_now = self.data_named_by_releases().await?;
        for object in candidates {
            if named_now.contains(&object.digest) {
                report.named.push(object);
                continue;
            }
            if mode == GcMode::Remove {
                self.delete_data(&object.digest).await?;
            }
            report.removed.push(object);
        }
        Ok(report)
    }
}
