//! Versioned data files: `registry-v1/data/sha256/<hex>.zst`.
//!
//! A data object is named by the sha256 of the file's *raw* bytes (what `sha256sum`
//! prints, and what a model records as the digest of the data it learned from) and
//! stored zstd-compressed: training CSVs shrink several times, and a registry keeps
//! every version. Because the stored bytes are not the named bytes, data lives apart
//! from model artifacts (whose stored bytes hash to their name), and every read
//! decompresses and re-hashes: a damaged or swapped object is [`Error::Corrupt`] (or
//! [`Error::CorruptCompression`]) and never reaches the caller's file.
//!
//! Push and pull stream in fixed buffers (a read chunk, a zstd window, at most
//! [`PARTS_IN_FLIGHT`] upload parts), so memory does not grow with the file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use jiff::Timestamp;
use object_store::WriteMultipart;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Registry;
use crate::artifacts::{PART_SIZE, PARTS_IN_FLIGHT, READ_CHUNK, hash_file, parent_dir, stored_at};
use crate::error::{Error, Result};
use crate::names::Digest;

/// zstd's fastest regular level. On the insurance CSV it compresses as well as the
/// default level 3 (about 3.8x; 78.3 MB vs 78.6 MB for a 300 MB file) in less CPU
/// time, and a push must keep up with `cp` + `sha256sum` (see `bench/data`).
const LEVEL: i32 = 1;

/// Compression workers beside the thread that reads and hashes: the machine's cores,
/// at most 4 (more buys nothing at level 1, and each holds a few MB of buffers).
fn compression_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32)
}

/// Where data objects live, relative to the layout folder.
const DATA_DIR: &str = "data/sha256";

pub(crate) fn data_rel(digest: &Digest) -> String {
    format!("{DATA_DIR}/{}.zst", digest.hex())
}

/// A stored data object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataObject {
    /// The digest of the raw (uncompressed) bytes.
    pub digest: Digest,
    /// Bytes taken in the store, compressed.
    pub stored_size: u64,
    /// When the object was last written to the store.
    pub stored_at: Timestamp,
}

/// What [`Registry::push_data_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPushOutcome {
    pub digest: Digest,
    /// Raw size of the file.
    pub size: u64,
    /// Compressed size in the store.
    pub stored_size: u64,
    /// False when an intact copy was already stored (push is idempotent).
    pub uploaded: bool,
}

/// What [`Registry::pull_data_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPullOutcome {
    /// Raw size of the file.
    pub size: u64,
    /// False when the destination already held exactly these bytes.
    pub written: bool,
}

/// The `kind:` of a data pointer file, so a model's pointer is never read as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointerKind {
    Data,
}

/// A pointer file naming a data file by digest (`train.csv.ref.yaml` beside
/// `train.csv`), committed to git instead of the data, as DVC's `.dvc` files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPointer {
    pub kind: PointerKind,
    /// sha256 of the raw file.
    pub digest: Digest,
    /// Raw size in bytes.
    pub size: u64,
    /// The file's name when it was pushed, e.g. `train.csv`.
    pub name: String,
    /// The registry it was pushed to, for people reading the pointer; commands use
    /// the configured registry (`--registry`, environment, `predict-buy.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// The suffix that makes a pointer file's name from its data file's.
pub const POINTER_SUFFIX: &str = ".ref.yaml";

impl DataPointer {
    /// `data/train.csv` → `data/train.csv.ref.yaml`.
    pub fn path_for(data_file: &Path) -> PathBuf {
        let mut name = data_file.as_os_str().to_owned();
        name.push(POINTER_SUFFIX);
        PathBuf::from(name)
    }

    /// The data file a pointer restores: its own path without the suffix, or, for a
    /// pointer named otherwise, the recorded name in the pointer's folder.
    pub fn data_path(&self, pointer: &Path) -> PathBuf {
        match pointer
            .to_str()
            .and_then(|p| p.strip_suffix(POINTER_SUFFIX))
        {
            Some(stem) if !stem.is_empty() && !stem.ends_with('/') => PathBuf::from(stem),
            _ => parent_dir(pointer).join(&self.name),
        }
    }

    /// True for paths that name a pointer file by the convention.
    pub fn is_pointer_path(path: &Path) -> bool {
        path.to_str().is_some_and(|p| p.ends_with(POINTER_SUFFIX))
    }

    /// Read a pointer file.
    pub fn read(path: &Path) -> Result<Self> {
        crate::artifacts::read_pointer(path)
    }

    /// Write a pointer file atomically (temp file + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::artifacts::write_pointer(self, path)
    }
}

impl Registry {
    /// Store a data file by the digest of its raw bytes, zstd-compressed and streamed:
    /// memory stays bounded whatever the file's size. Idempotent: if an intact copy is
    /// stored nothing is uploaded; a damaged copy is replaced.
    ///
    /// The file is hashed first (the digest names the object), then compressed and
    /// uploaded while being hashed again; if the two differ the upload is aborted with
    /// [`Error::ChangedDuringPush`], so no object is ever stored under a wrong name.
    pub async fn push_data_file(&self, path: &Path) -> Result<DataPushOutcome> {
        let owned = path.to_path_buf();
        let (digest, size) = tokio::task::spawn_blocking(move || hash_file(&owned))
            .await
            .expect("hash task panicked")?;
        if let Some(stored_size) = self.intact_data(&digest).await? {
            return Ok(DataPushOutcome {
                digest,
                size,
                stored_size,
                uploaded: false,
            });
        }
        let stored_size = self.upload_compressed(path, &digest).await?;
        Ok(DataPushOutcome {
            digest,
            size,
            stored_size,
            uploaded: true,
        })
    }

    /// The stored size of an intact copy of `digest`, or `None` when there is none (or
    /// only a damaged one, which a push then replaces).
    async fn intact_data(&self, digest: &Digest) -> Result<Option<u64>> {
        let Some(meta) = self.store.head(&data_rel(digest)).await? else {
            return Ok(None);
        };
        let mut sink = tokio::io::sink();
        match self
            .inflate_into(digest, &mut sink, |e| Error::Io {
                op: "discarding",
                path: PathBuf::new(),
                source: e,
            })
            .await
        {
            Ok(_) => Ok(Some(meta.size)),
            Err(Error::Corrupt { .. } | Error::CorruptCompression { .. }) => {
                tracing::warn!(%digest, "stored data object is damaged; replacing it");
                Ok(None)
            }
            Err(Error::UnknownData { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn upload_compressed(&self, path: &Path, digest: &Digest) -> Result<u64> {
        let rel = data_rel(digest);
        let read_err = |source| Error::Io {
            op: "reading",
            path: path.to_path_buf(),
            source,
        };
        let compress_err = |source| Error::Io {
            op: "compressing",
            path: path.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(read_err)?;
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), LEVEL)
            .and_then(|mut e| {
                e.include_checksum(true)?;
                e.multithread(compression_workers())?;
                Ok(e)
            })
            .map_err(compress_err)?;
        let upload = self.store.put_multipart(&rel).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut stored = 0u64;
        let outcome: Result<()> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(read_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                encoder.write_all(&buf[..n]).map_err(compress_err)?;
                // The encoder's output for one chunk is at most about a chunk.
                let out = encoder.get_mut();
                if !out.is_empty() {
                    writer
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(|e| self.store.wrap("uploading", &rel, e))?;
                    writer.write(out);
                    stored += out.len() as u64;
                    out.clear();
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            let _ = writer.abort().await;
            return Err(e);
        }
        let tail = match encoder.finish() {
            Ok(tail) => tail,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(compress_err(e));
            }
        };
        writer.write(&tail);
        stored += tail.len() as u64;
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
        Ok(stored)
    }

    /// Decompress a stored data object into `sink`, checking its digest; returns the
    /// raw size. The caller must discard what was written on error: the digest is
    /// only known to match once the last byte is through.
    async fn inflate_into<W: AsyncWrite + Unpin>(
        &self,
        digest: &Digest,
        sink: &mut W,
        write_err: impl Fn(std::io::Error) -> Error,
    ) -> Result<u64> {
        let rel = data_rel(digest);
        let Some((_, mut stream)) = self.store.get_stream(&rel).await? else {
            return Err(Error::UnknownData {
                digest: digest.clone(),
                registry: self.store.label().to_string(),
            });
        };
        let object = format!("{}/{rel}", crate::store::LAYOUT);
        let corrupt = |source| Error::CorruptCompression {
            object: object.clone(),
            source,
        };
        let mut decoder = zstd::stream::raw::Decoder::new().map_err(corrupt)?;
        let mut out = vec![0u8; READ_CHUNK];
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        // zstd's hint is 0 exactly when a frame has ended; anything else at the end of
        // the input is a truncated object.
        let mut frame_done = true;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let mut input = zstd::stream::raw::InBuffer::around(&chunk);
            loop {
                let (hint, n) = {
                    let mut output = zstd::stream::raw::OutBuffer::around(&mut out[..]);
                    let hint =
                        zstd::stream::raw::Operation::run(&mut decoder, &mut input, &mut output)
                            .map_err(corrupt)?;
                    (hint, output.pos())
                };
                frame_done = hint == 0;
                if n > 0 {
                    hasher.update(&out[..n]);
                    size += n as u64;
                    sink.write_all(&out[..n]).await.map_err(&write_err)?;
                }
                // Done with this chunk once its input is used up and the decoder had
                // no more output than fit (a full buffer may mean more is pending).
                if input.pos() == chunk.len() && n < out.len() {
                    break;
                }
            }
        }
        if !frame_done {
            return Err(corrupt(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the compressed stream ends mid-frame (truncated)",
            )));
        }
        sink.flush().await.map_err(&write_err)?;
        let actual = Digest::from_hasher(hasher);
        if &actual != digest {
            return Err(Error::Corrupt {
                object,
                expected: digest.clone(),
                actual: actual.to_string(),
            });
        }
        Ok(size)
    }

    /// Read a data object into memory, checking its digest.
    pub async fn read_data(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.inflate_into(digest, &mut out, |source| Error::Io {
            op: "buffering",
            path: PathBuf::new(),
            source,
        })
        .await?;
        Ok(out)
    }

    /// Restore a data object to `dest`, checking its digest. The file appears
    /// atomically, and only with the right content. A `dest` that already holds these
    /// bytes is left alone; one holding other bytes is [`Error::WouldClobber`] unless
    /// `overwrite`. Memory stays flat whatever the size.
    pub async fn pull_data_to(
        &self,
        digest: &Digest,
        dest: &Path,
        overwrite: bool,
    ) -> Result<DataPullOutcome> {
        if let Some(existing) = existing_digest(dest).await? {
            if &existing.0 == digest {
                return Ok(DataPullOutcome {
                    size: existing.1,
                    written: false,
                });
            }
            if !overwrite {
                return Err(Error::WouldClobber {
                    path: dest.to_path_buf(),
                    existing: existing.0,
                    wanted: digest.clone(),
                });
            }
        }
        let io_err = |op, source| Error::Io {
            op,
            path: dest.to_path_buf(),
            source,
        };
        let dir = parent_dir(dest);
        std::fs::create_dir_all(dir).map_err(|e| io_err("creating the folder of", e))?;
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| io_err("creating temp file for", e))?;
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let size = self
            .inflate_into(digest, &mut file, |e| io_err("writing", e))
            .await?;
        file.sync_all().await.map_err(|e| io_err("writing", e))?;
        // Temp files are created private; a restored data file is an ordinary one.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .await
                .map_err(|e| io_err("setting permissions of", e))?;
        }
        drop(file);
        if overwrite {
            tmp_path
                .persist(dest)
                .map_err(|e| io_err("replacing", e.error))?;
        } else {
            // No-clobber even against a file created since the check above.
            match tmp_path.persist_noclobber(dest) {
                Ok(()) => {}
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                    return match existing_digest(dest).await? {
                        Some((d, size)) if &d == digest => Ok(DataPullOutcome {
                            size,
                            written: false,
                        }),
                        Some((existing, _)) => Err(Error::WouldClobber {
                            path: dest.to_path_buf(),
                            existing,
                            wanted: digest.clone(),
                        }),
                        None => Err(io_err("creating", e.error)),
                    };
                }
                Err(e) => return Err(io_err("creating", e.error)),
            }
        }
        Ok(DataPullOutcome {
            size,
            written: true,
        })
    }

    /// True if a data object with this digest is stored (its bytes are not checked).
    pub async fn has_data(&self, digest: &Digest) -> Result<bool> {
        Ok(self.store.head(&data_rel(digest)).await?.is_some())
    }

    /// Every stored data object, oldest first.
    pub async fn list_data(&self) -> Result<Vec<DataObject>> {
        let mut out: Vec<DataObject> = self
            .store
            .list(DATA_DIR)
            .await?
            .into_iter()
            .filter_map(|(rel, meta)| {
                let name = rel.strip_prefix(DATA_DIR)?.strip_prefix('/')?;
                let digest = Digest::parse(name.strip_suffix(".zst")?).ok()?;
                Some(DataObject {
                    digest,
                    stored_size: meta.size,
                    stored_at: stored_at(&meta),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.stored_at, &a.digest).cmp(&(b.stored_at, &b.digest)));
        Ok(out)
    }

    /// Remove one data object; absent is fine. Only `registry gc` calls this, after
    /// checking that no release names it.
    pub(crate) async fn delete_data(&self, digest: &Digest) -> Result<()> {
        self.store.delete(&data_rel(digest)).await
    }

    /// For `file://` registries, where a data object's compressed bytes live on disk.
    pub fn local_data_path(&self, digest: &Digest) -> Option<PathBuf> {
        self.store.local_path(&data_rel(digest))
    }
}

/// The digest and size of the regular file at `path`, or `None` if there is none.
async fn existing_digest(path: &Path) -> Result<Option<(Digest, u64)>> {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(Error::Io {
                op: "restoring over",
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it exists and is not a regular file",
                ),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                op: "inspecting",
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_file(&owned))
        .await
        .expect("hash task panicked")
        .map(Some)
}

/// Hash a local file as a data object would be named (sha256 of its raw bytes).
pub fn data_digest_of_file(path: &Path) -> Result<(Digest, u64)> {
    hash_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_paths_follow_the_data_file() {
        let p = DataPointer::path_for(Path::new("data/train.csv"));
        assert_eq!(p, PathBuf::from("data/train.csv.ref.yaml"));
        let pointer = DataPointer {
            kind: PointerKind::Data,
            digest: Digest::of(b"x"),
            size: 1,
            name: "train.csv".into(),
            registry: None,
        };
        assert_eq!(pointer.data_path(&p), PathBuf::from("data/train.csv"));
        assert_eq!(
            pointer.data_path(Path::new("data/renamed.yaml")),
            PathBuf::from("data/train.csv")
        );
        assert!(DataPointer::is_pointer_path(&p));
        assert!(!DataPointer::is_pointer_path(Path::new("data/train.csv")));
    }

    #[test]
    fn a_model_pointer_is_not_a_data_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pbm.ref.yaml");
        std::fs::write(
            &path,
            format!("digest: {}\nsize: 3\npath: model.pbm\n", Digest::of(b"abc")),
        )
        .unwrap();
        let err = DataPointer::read(&path).unwrap_err();
        assert!(matches!(err, Error::Pointer { .. }), "{err:?}");
        assert!(err.to_string().contains("model.pbm.ref.yaml"), "{err}");
    }

    #[test]
    fn zstd_round_trips_in_bounded_chunks() {
        // The same encoder settings as a push, decoded with the raw API as a pull does.
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), LEVEL).unwrap();
        enc.include_checksum(true).unwrap();
        enc.write_all(&data).unwrap();
        let compressed = enc.finish().unwrap();
        assert!(compressed.len() < data.len() / 4, "{}", compressed.len());
        let mut dec = zstd::stream::raw::Decoder::new().unwrap();
        let mut out = vec![0u8; 4096];
        let mut back = Vec::new();
        let mut input = zstd::stream::raw::InBuffer::around(&compressed);
        loop {
            let mut o = zstd::stream::raw::OutBuffer::around(&mut out[..]);
            let hint = zstd::stream::raw::Operation::run(&mut dec, &mut input, &mut o).unwrap();
            let n = o.pos();
            back.extend_from_slice(&out[..n]);
            if hint == 0 && input.pos() == compressed.len() {
                break;
            }
        }
        assert!(back == data);
    }
}
