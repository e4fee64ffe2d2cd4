//! Content-addressed artifacts: `registry-v1/objects/sha256/<hex>`.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use object_store::WriteMultipart;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::Registry;
use crate::error::{Error, Result};
use crate::names::Digest;

/// Streamed uploads are cut into parts of this size (S3's minimum is 5 MiB).
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once; with `PART_SIZE` this bounds a push's memory.
pub(crate) const PARTS_IN_FLIGHT: usize = 2;
/// Read buffer when hashing or uploading a file.
pub(crate) const READ_CHUNK: usize = 1024 * 1024;

pub(crate) fn object_rel(digest: &Digest) -> String {
    format!("objects/sha256/{}", digest.hex())
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written to the store.
    pub stored_at: Timestamp,
}

/// What [`Registry::push_file`] and [`Registry::push_bytes`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub digest: Digest,
    pub size: u64,
    /// False when an intact copy was already stored (push is idempotent).
    pub uploaded: bool,
}

/// One object whose bytes do not match its name, found by [`Registry::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorruptObject {
    /// The object's key, e.g. `registry-v1/objects/sha256/<hex>`.
    pub object: String,
    pub expected: Digest,
    /// What the bytes actually hash to (`sha256:<hex>`).
    pub actual: String,
}

/// The result of [`Registry::verify`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// How many objects were re-hashed.
    pub checked: usize,
    pub corrupt: Vec<CorruptObject>,
    /// Leftovers of writes that never finished. Harmless to readers, so a warning,
    /// not a failure; `predict-buy registry gc` removes the old ones.
    pub interrupted: Vec<crate::InterruptedWrite>,
}

/// A small file naming an artifact by digest, meant to be committed to git beside the
/// code that produced it (like a `.dvc` file). Stored as YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactPointer {
    pub digest: Digest,
    pub size: u64,
    /// The file the artifact was pushed from, as given to `push`.
    pub path: String,
}

impl ArtifactPointer {
    /// The conventional pointer path for an artifact: `model.pbm` → `model.pbm.ref.yaml`.
    pub fn path_for(artifact: &Path) -> PathBuf {
        let mut name = artifact.as_os_str().to_owned();
        name.push(".ref.yaml");
        PathBuf::from(name)
    }

    /// Read a pointer file.
    pub fn read(path: &Path) -> Result<Self> {
        read_pointer(path)
    }

    /// Write a pointer file atomically (temp file + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_pointer(self, path)
    }
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |op, source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let dir = parent_dir(path);
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err("creating temp file for", e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| io_err("writing", e))?;
    tmp.persist(path)
        .map_err(|e| io_err("replacing", e.error))?;
    Ok(())
}

pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub(crate) fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let io_err = |source| Error::Io {
        op: "reading",
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_hasher(hasher), size))
}

impl Registry {
    /// Store a file's bytes by digest, streaming: memory stays bounded (a few parts of
    /// 8 MiB) whatever the file's size. Idempotent: if an intact copy is already
    /// stored nothing is uploaded; a damaged copy is replaced.
    ///
    /// The file is hashed first, then uploaded while being hashed again; if the two
    /// hashes differ the upload is aborted with [`Error::ChangedDuringPush`], so an
    /// object can never be stored under the wrong name.
    pub async fn push_file(&self, path: &Path) -> Result<PushOutcome> {
        let owned = path.to_path_buf();
        let (digest, size) = tokio::task::spawn_blocking(move || hash_file(&owned))
            .await
            .expect("hash task panicked")?;
        if self.has_intact_copy(&digest, size).await? {
            return Ok(PushOutcome {
                digest,
                size,
                uploaded: false,
            });
        }
        self.upload_file(path, &digest).await?;
        Ok(PushOutcome {
            digest,
            size,
            uploaded: true,
        })
    }

    async fn upload_file(&self, path: &Path, digest: &Digest) -> Result<()> {
        let rel = object_rel(digest);
        let io_err = |source| Error::Io {
            op: "reading",
            path: path.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io_err)?;
        let upload = self.store.put_multipart(&rel).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io_err(e));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.store.wrap("uploading", &rel, e));
            }
            writer.write(&buf[..n]);
        }
        let actual = Digest::from_hasher(hasher);
        if &actual != digest {
            let _ = writer.abort().await;
            return Err(Error::ChangedDuringPush {
                path: path.to_path_buf(),
                expected: digest.clone(),
                actual,
            });
        }
        writer
            .finish()
            .await
            .map_err(|e| self.store.wrap("uploading", &rel, e))?;
        Ok(())
    }

    /// Store bytes by digest; idempotent like [`Registry::push_file`].
    pub async fn push_bytes(&self, bytes: Bytes) -> Result<PushOutcome> {
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        if self.has_intact_copy(&digest, size).await? {
            return Ok(PushOutcome {
                digest,
                size,
                uploaded: false,
            });
        }
        // Overwrite, not create: a damaged copy must be replaced, and a racing writer
        // stores the very same bytes.
        self.store.overwrite(&object_rel(&digest), bytes).await?;
        Ok(PushOutcome {
            digest,
            size,
            uploaded: true,
        })
    }

    async fn has_intact_copy(&self, digest: &Digest, size: u64) -> Result<bool> {
        match self.store.head(&object_rel(digest)).await? {
            Some(meta) if meta.size == size => match self.hash_object(digest).await {
                Ok(Some(actual)) => Ok(&actual == digest),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            },
            Some(meta) => {
                tracing::warn!(%digest, stored = meta.size, size, "stored copy has the wrong size; replacing it");
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// Hash a stored object, streaming; `None` if it does not exist.
    async fn hash_object(&self, digest: &Digest) -> Result<Option<Digest>> {
        let Some((_, mut stream)) = self.store.get_stream(&object_rel(digest)).await? else {
            return Ok(None);
        };
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        Ok(Some(Digest::from_hasher(hasher)))
    }

    fn corrupt(&self, digest: &Digest, actual: Digest) -> Error {
        Error::Corrupt {
            object: format!("{}/{}", crate::store::LAYOUT, object_rel(digest)),
            expected: digest.clone(),
            actual: actual.to_string(),
        }
    }

    fn unknown_digest(&self, digest: &Digest) -> Error {
        Error::UnknownDigest {
            reference: digest.to_string(),
            registry: self.store.label().to_string(),
        }
    }

    /// Read an artifact into memory, checking its digest.
    pub async fn pull(&self, digest: &Digest) -> Result<Bytes> {
        let Some((size, stream)) = self.store.get_stream(&object_rel(digest)).await? else {
            return Err(self.unknown_digest(digest));
        };
        let mut hasher = Sha256::new();
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            out.extend_from_slice(&chunk);
        }
        let actual = Digest::from_hasher(hasher);
        if &actual != digest {
            return Err(self.corrupt(digest, actual));
        }
        Ok(Bytes::from(out))
    }

    /// Stream an artifact to `dest`, checking its digest. The file appears (atomically,
    /// by rename) only if the digest matches; memory stays flat.
    pub async fn pull_to(&self, digest: &Digest, dest: &Path) -> Result<u64> {
        let Some((_, mut stream)) = self.store.get_stream(&object_rel(digest)).await? else {
            return Err(self.unknown_digest(digest));
        };
        let io_err = |op, source| Error::Io {
            op,
            path: dest.to_path_buf(),
            source,
        };
        let tmp = tempfile::NamedTempFile::new_in(parent_dir(dest))
            .map_err(|e| io_err("creating temp file for", e))?;
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(|e| io_err("writing", e))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| io_err("writing", e))?;
        drop(file);
        let actual = Digest::from_hasher(hasher);
        if &actual != digest {
            return Err(self.corrupt(digest, actual));
        }
        tmp_path
            .persist(dest)
            .map_err(|e| io_err("replacing", e.error))?;
        Ok(size)
    }

    /// Every stored artifact, oldest first.
    pub async fn list_artifacts(&self) -> Result<Vec<ArtifactInfo>> {
        let mut out: Vec<ArtifactInfo> = self
            .store
            .list("objects/sha256")
            .await?
            .into_iter()
            .filter_map(|(rel, meta)| {
                let hex = rel.strip_prefix("objects/sha256/")?;
                let digest = Digest::parse(hex).ok()?;
                Some(ArtifactInfo {
                    digest,
                    size: meta.size,
                    stored_at: stored_at(&meta),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.stored_at, &a.digest).cmp(&(b.stored_at, &b.digest)));
        Ok(out)
    }

    /// Size and time of one artifact, without reading it.
    pub async fn show_artifact(&self, digest: &Digest) -> Result<ArtifactInfo> {
        let meta = self
            .store
            .head(&object_rel(digest))
            .await?
            .ok_or_else(|| self.unknown_digest(digest))?;
        Ok(ArtifactInfo {
            digest: digest.clone(),
            size: meta.size,
            stored_at: stored_at(&meta),
        })
    }

    /// True if an artifact with this digest is stored (its bytes are not checked).
    pub async fn has_artifact(&self, digest: &Digest) -> Result<bool> {
        Ok(self.store.head(&object_rel(digest)).await?.is_some())
    }

    /// Turn user input into a stored digest: the full `sha256:<hex>` form, or a unique
    /// hex prefix of at least 8 digits (with or without `sha256:`).
    pub async fn resolve_digest(&self, input: &str) -> Result<Digest> {
        let hex_part = input.strip_prefix("sha256:").unwrap_or(input);
        if hex_part.len() == 64 {
            let digest = Digest::parse(input)?;
            return if self.has_artifact(&digest).await? {
                Ok(digest)
            } else {
                Err(self.unknown_digest(&digest))
            };
        }
        let bad = |reason: &str| Error::InvalidDigest {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if hex_part.len() < 8 {
            return Err(bad(
                "give the full sha256:<64 hex> digest or at least 8 hex digits",
            ));
        }
        if hex_part.len() > 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("a digest prefix is 8 to 64 hex digits"));
        }
        let prefix = hex_part.to_ascii_lowercase();
        let matches: Vec<Digest> = self
            .list_artifacts()
            .await?
            .into_iter()
            .map(|a| a.digest)
            .filter(|d| d.hex().starts_with(&prefix))
            .collect();
        match matches.len() {
            0 => Err(Error::UnknownDigest {
                reference: input.to_string(),
                registry: self.store.label().to_string(),
            }),
            1 => Ok(matches.into_iter().next().expect("one match")),
            _ => Err(Error::AmbiguousDigest {
                prefix: input.to_string(),
                registry: self.store.label().to_string(),
                matches,
            }),
        }
    }

    /// Re-hash every stored artifact and report each whose bytes do not match its name.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let artifacts = self.list_artifacts().await?;
        let checked = artifacts.len();
        let results: Vec<Option<CorruptObject>> = futures::stream::iter(artifacts)
            .map(|a| async move {
                let actual = self.hash_object(&a.digest).await?;
                Ok::<_, Error>(match actual {
                    Some(actual) if actual != a.digest => Some(CorruptObject {
                        object: format!("{}/{}", crate::store::LAYOUT, object_rel(&a.digest)),
                        expected: a.digest,
                        actual: actual.to_string(),
                    }),
                    // Deleted since listing, or intact.
                    _ => None,
                })
            })
            .buffer_unordered(4)
            .try_collect()
            .await?;
        let mut corrupt: Vec<CorruptObject> = results.into_iter().flatten().collect();
        corrupt.sort_by(|a, b| a.object.cmp(&b.object));
        let interrupted = self.interrupted_writes().await?;
        Ok(VerifyReport {
            checked,
            corrupt,
            interrupted,
        })
    }
}

/// When an object was last written, as a `jiff` timestamp.
pub(crate) fn stored_at(meta: &object_store::ObjectMeta) -> Timestamp {
    Timestamp::from_millisecond(meta.last_modified.timestamp_millis())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A pointer file (model or data) read as YAML; errors name the file.
pub(crate) fn read_pointer<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        op: "reading pointer file",
        path: path.to_path_buf(),
        source,
    })?;
    serde_yaml_ng::from_str(&text).map_err(|source| Error::Pointer {
        path: path.to_path_buf(),
        source,
    })
}

/// A pointer file written as YAML, atomically (temp file + rename).
pub(crate) fn write_pointer<T: serde::Serialize>(pointer: &T, path: &Path) -> Result<()> {
    let text = serde_yaml_ng::to_string(pointer).map_err(|source| Error::Pointer {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}
