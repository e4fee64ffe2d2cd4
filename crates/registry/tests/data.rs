//! Data objects on both backends: a `file://` folder and a real S3-compatible server
//! over HTTP (s3s, in-process). Push and pull round trips, the digest checked on every
//! read, no silent clobbering, and gc sparing data that a release names.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Backend, Fixture};
use predict_buy_registry::{
    DataRef, Digest, Error, GcMode, Registry, ReleaseRecord, ReleaseTag, TrainingRecord,
};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn file() {
                super::$name(Fixture::new(Backend::File).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name(Fixture::new(Backend::S3).await).await
            }
        }
    )*};
}

both_backends!(
    push_compresses_and_pull_restores,
    pull_never_clobbers_a_different_file,
    tampered_data_is_detected_on_every_read,
    gc_spares_data_a_release_names,
);

/// CSV-like text: compressible, as real data is, and different per seed.
fn csv(seed: u64, rows: usize) -> Vec<u8> {
    let mut out = b"id,Gender,Age,AnnualPremium,Result\n".to_vec();
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let gender = if x.is_multiple_of(2) {
            "Male"
        } else {
            "Female"
        };
        out.extend_from_slice(
            format!(
                "{i},{gender},{},\"£{}.{:02}\",{}\n",
                20 + x % 60,
                131 + x % 3000,
                x % 100,
                x % 7 / 6
            )
            .as_bytes(),
        );
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn data_key(digest: &Digest) -> String {
    format!("data/sha256/{}.zst", digest.hex())
}

async fn push_compresses_and_pull_restores(fx: Fixture) {
    let reg = &fx.registry;
    // Several upload parts' worth of raw bytes, so the stream crosses part boundaries.
    let data = csv(1, 800_000);
    assert!(data.len() > 20 * 1024 * 1024, "{}", data.len());
    let src = write(fx.dir.path(), "train.csv", &data);

    let pushed = reg.push_data_file(&src).await.unwrap();
    assert!(pushed.uploaded);
    assert_eq!(pushed.digest, Digest::of(&data));
    assert_eq!(pushed.size, data.len() as u64);
    assert!(
        pushed.stored_size * 2 < pushed.size,
        "stored {} of {} bytes: not compressed",
        pushed.stored_size,
        pushed.size
    );
    let on_disk = std::fs::metadata(fx.key_file(&data_key(&pushed.digest))).unwrap();
    assert_eq!(on_disk.len(), pushed.stored_size);

    let again = reg.push_data_file(&src).await.unwrap();
    assert!(!again.uploaded, "an intact copy must not be uploaded again");
    assert_eq!(again.digest, pushed.digest);

    let listed = reg.list_data().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, pushed.digest);
    assert_eq!(listed[0].stored_size, pushed.stored_size);
    assert!(reg.has_data(&pushed.digest).await.unwrap());
    // Data is not a model artifact: it must not show among them.
    assert!(reg.list_artifacts().await.unwrap().is_empty());

    let dest = fx.dir.path().join("restored/train.csv");
    let pulled = reg
        .pull_data_to(&pushed.digest, &dest, false)
        .await
        .unwrap();
    assert!(pulled.written);
    assert_eq!(pulled.size, data.len() as u64);
    assert!(std::fs::read(&dest).unwrap() == data);
    let twice = reg
        .pull_data_to(&pushed.digest, &dest, false)
        .await
        .unwrap();
    assert!(!twice.written, "an up-to-date file is left alone");
    assert!(reg.read_data(&pushed.digest).await.unwrap() == data);

    let unknown = Digest::of(b"never pushed");
    let err = reg.read_data(&unknown).await.unwrap_err();
    assert!(matches!(err, Error::UnknownData { .. }), "{err:?}");
    assert!(err.is_user_error());
    assert!(err.to_string().contains(unknown.hex()), "{err}");
}

async fn pull_never_clobbers_a_different_file(fx: Fixture) {
    let reg = &fx.registry;
    let data = csv(2, 1000);
    let src = write(fx.dir.path(), "test.csv", &data);
    let pushed = reg.push_data_file(&src).await.unwrap();

    let dest = write(fx.dir.path(), "edited.csv", b"someone's local edits\n");
    let err = reg
        .pull_data_to(&pushed.digest, &dest, false)
        .await
        .unwrap_err();
    match &err {
        Error::WouldClobber {
            path,
            existing,
            wanted,
        } => {
            assert_eq!(path, &dest);
            assert_eq!(existing, &Digest::of(b"someone's local edits\n"));
            assert_eq!(wanted, &pushed.digest);
        }
        other => panic!("expected WouldClobber, got {other:?}"),
    }
    assert!(err.to_string().contains("edited.csv"), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"someone's local edits\n");

    let forced = reg.pull_data_to(&pushed.digest, &dest, true).await.unwrap();
    assert!(forced.written);
    assert!(std::fs::read(&dest).unwrap() == data);
}

async fn tampered_data_is_detected_on_every_read(fx: Fixture) {
    let reg = &fx.registry;
    let data = csv(3, 20_000);
    let src = write(fx.dir.path(), "train.csv", &data);
    let pushed = reg.push_data_file(&src).await.unwrap();
    let stored = fx.key_file(&data_key(&pushed.digest));

    // Swapped for a well-formed object of other rows: decompresses, wrong digest.
    let other = csv(4, 20_000);
    std::fs::write(&stored, zstd::encode_all(other.as_slice(), 3).unwrap()).unwrap();
    let dest = fx.dir.path().join("out.csv");
    match reg.pull_data_to(&pushed.digest, &dest, false).await {
        Err(Error::Corrupt {
            object,
            expected,
            actual,
        }) => {
            assert!(object.ends_with(&data_key(&pushed.digest)), "{object}");
            assert_eq!(expected, pushed.digest);
            assert_eq!(actual, Digest::of(&other).to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        !dest.exists(),
        "a corrupt pull must not leave a file behind"
    );
    assert!(matches!(
        reg.read_data(&pushed.digest).await,
        Err(Error::Corrupt { .. })
    ));

    // One flipped byte in the compressed stream, and a truncated one.
    let mut bytes = zstd::encode_all(data.as_slice(), 3).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&stored, &bytes).unwrap();
    let err = reg.read_data(&pushed.digest).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt { .. } | Error::CorruptCompression { .. }
        ),
        "{err:?}"
    );
    assert!(!err.is_user_error());
    let whole = zstd::encode_all(data.as_slice(), 3).unwrap();
    std::fs::write(&stored, &whole[..whole.len() - 10]).unwrap();
    let err = reg.read_data(&pushed.digest).await.unwrap_err();
    assert!(matches!(err, Error::CorruptCompression { .. }), "{err:?}");

    // Pushing the right file again replaces the damaged copy.
    let repaired = reg.push_data_file(&src).await.unwrap();
    assert!(repaired.uploaded, "a damaged copy must be replaced");
    assert!(reg.read_data(&pushed.digest).await.unwrap() == data);
}

fn release(tag: &str, model: &Digest, data: &[&Digest]) -> ReleaseRecord {
    ReleaseRecord {
        tag: ReleaseTag::parse(tag).unwrap(),
        model_digest: model.clone(),
        image: None,
        git_commit: None,
        notes: String::new(),
        created_at: jiff::Timestamp::now(),
        created_by: "test".into(),
        metrics: serde_json::Value::Null,
        golden: Vec::new(),
        training: Some(TrainingRecord {
            data: data
                .iter()
                .map(|d| DataRef {
                    role: "train".into(),
                    digest: (*d).clone(),
                    size: 1,
                    name: "train.csv".into(),
                })
                .collect(),
            data_in_registry: true,
            config: serde_json::json!({"model": {"name": "DecisionTreeClassifier"}}),
            tool_version: "0.1.0".into(),
        }),
    }
}

async fn push(reg: &Registry, dir: &Path, seed: u64) -> Digest {
    let src = write(dir, &format!("d{seed}.csv"), &csv(seed, 500));
    reg.push_data_file(&src).await.unwrap().digest
}

async fn gc_spares_data_a_release_names(fx: Fixture) {
    let reg = &fx.registry;
    let named = push(reg, fx.dir.path(), 10).await;
    let loose = push(reg, fx.dir.path(), 11).await;
    let model = reg
        .push_bytes(bytes::Bytes::from_static(b"model bytes"))
        .await
        .unwrap()
        .digest;
    reg.create_release(&release("v1.0.0", &model, &[&named]))
        .await
        .unwrap();
    let stored = reg.get_release(&ReleaseTag::parse("v1.0.0").unwrap()).await;
    assert_eq!(
        stored.unwrap().data_digests().cloned().collect::<Vec<_>>(),
        vec![named.clone()]
    );

    // Young loose data stays: a release may still come for it.
    let report = reg
        .collect_unreferenced_data(Duration::from_secs(3600), GcMode::Remove)
        .await
        .unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(digests(&report.young), vec![loose.clone()]);
    assert_eq!(digests(&report.named), vec![named.clone()]);

    let dry = reg
        .collect_unreferenced_data(Duration::ZERO, GcMode::DryRun)
        .await
        .unwrap();
    assert_eq!(digests(&dry.removed), vec![loose.clone()]);
    assert!(
        reg.has_data(&loose).await.unwrap(),
        "a dry run removed data"
    );

    let done = reg
        .collect_unreferenced_data(Duration::ZERO, GcMode::Remove)
        .await
        .unwrap();
    assert_eq!(digests(&done.removed), vec![loose.clone()]);
    assert_eq!(digests(&done.named), vec![named.clone()]);
    assert!(done.bytes_freed() > 0);
    assert!(!reg.has_data(&loose).await.unwrap());
    assert!(reg.has_data(&named).await.unwrap());
    reg.read_data(&named).await.unwrap();
    // Model artifacts are never data gc's business.
    assert!(reg.pull(&model).await.is_ok());
}

fn digests(objects: &[predict_buy_registry::DataObject]) -> Vec<Digest> {
    objects.iter().map(|o| o.digest.clone()).collect()
}
