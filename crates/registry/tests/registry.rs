//! One suite, run against both backends: a `file://` folder and a real S3-compatible
//! server over HTTP. `both_backends!` turns each `async fn(Fixture)` into a `file` and
//! an `s3` test.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, Fixture, bytes, wait_until};
use predict_buy_registry::{
    ArtifactPointer, CandidateMode, Digest, EnvName, Error, GcMode, GoldenPrediction,
    NewHistoryEntry, Outcome, Registry, RegistryOptions, RegistryUrl, ReleaseRecord, ReleaseTag,
    RequestKey, S3Options,
};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn file() {
                super::$name(Fixture::new(Backend::File).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn s3() {
                super::$name(Fixture::new(Backend::S3).await).await
            }
        }
    )*};
}

both_backends!(
    push_is_idempotent,
    large_push_streams_and_pulls_back,
    every_read_checks_the_digest,
    digest_prefixes_resolve,
    releases_are_immutable,
    unknown_tags_and_digests_are_user_errors,
    concurrent_pushes_store_each_object_once,
    concurrent_creation_of_one_tag_has_one_winner,
    list_releases_in_semver_order,
    env_state_is_compare_and_swap,
    concurrent_history_appends_lose_nothing,
    lease_held_expired_released_broken,
    killed_writer_leaves_registry_readable,
    reads_of_a_missing_registry_create_nothing,
    gc_removes_only_old_leftovers,
    one_candidate_per_environment,
);

fn tag(s: &str) -> ReleaseTag {
    ReleaseTag::parse(s).unwrap()
}

fn env(s: &str) -> EnvName {
    EnvName::parse(s).unwrap()
}

fn record(t: &str, digest: &Digest, notes: &str) -> ReleaseRecord {
    ReleaseRecord {
        tag: tag(t),
        model_digest: digest.clone(),
        image: Some(format!("registry.example/predict-buy:{t}")),
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        notes: notes.into(),
        created_at: jiff::Timestamp::now(),
        created_by: "test".into(),
        metrics: serde_json::json!({"roc_auc": 0.85, "accuracy": 0.88}),
        golden: vec![GoldenPrediction {
            input: serde_json::json!({"Gender": "Male", "Age": 44, "AnnualPremium": "£1,623.85"}),
            predicted_class: 1,
            probability: 0.73,
        }],
        training: None,
    }
}

fn entry(
    actor: &str,
    release: Option<&ReleaseTag>,
    outcome: Outcome,
    message: &str,
) -> NewHistoryEntry {
    NewHistoryEntry {
        release: release.cloned(),
        previous: None,
        actor: actor.into(),
        outcome,
        message: message.into(),
    }
}

async fn push_model(reg: &Registry, seed: u64) -> Digest {
    reg.push_bytes(Bytes::from(bytes(seed, 4096)))
        .await
        .unwrap()
        .digest
}

async fn push_is_idempotent(fx: Fixture) {
    let reg = &fx.registry;
    let data = bytes(1, 100_000);
    let first = reg.push_bytes(Bytes::from(data.clone())).await.unwrap();
    assert!(first.uploaded);
    assert_eq!(first.digest, Digest::of(&data));
    assert_eq!(first.size, 100_000);

    let again = reg.push_bytes(Bytes::from(data.clone())).await.unwrap();
    assert_eq!(again.digest, first.digest);
    assert!(!again.uploaded, "an intact copy must not be uploaded again");

    let path = fx.dir.path().join("model.pbm");
    std::fs::write(&path, &data).unwrap();
    let from_file = reg.push_file(&path).await.unwrap();
    assert_eq!(from_file.digest, first.digest);
    assert!(!from_file.uploaded);

    let listed = reg.list_artifacts().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, first.digest);
    assert_eq!(listed[0].size, 100_000);
    let shown = reg.show_artifact(&first.digest).await.unwrap();
    assert_eq!(shown.size, 100_000);
}

async fn large_push_streams_and_pulls_back(fx: Fixture) {
    let reg = &fx.registry;
    // Three multipart parts (8 MiB each, the last one short).
    let data = bytes(2, 20 * 1024 * 1024 + 123);
    let src = fx.dir.path().join("big.pbm");
    std::fs::write(&src, &data).unwrap();
    let pushed = reg.push_file(&src).await.unwrap();
    assert!(pushed.uploaded);
    assert_eq!(pushed.digest, Digest::of(&data));
    assert_eq!(pushed.size, data.len() as u64);

    let dest = fx.dir.path().join("pulled.pbm");
    let size = reg.pull_to(&pushed.digest, &dest).await.unwrap();
    assert_eq!(size, data.len() as u64);
    assert!(std::fs::read(&dest).unwrap() == data);
    assert!(reg.pull(&pushed.digest).await.unwrap() == data);
}

async fn every_read_checks_the_digest(fx: Fixture) {
    let reg = &fx.registry;
    let good = push_model(reg, 3).await;
    let bad = push_model(reg, 4).await;

    // Flip one byte on disk, behind the registry's back.
    let file = fx.object_file(&bad);
    let mut stored = std::fs::read(&file).unwrap();
    stored[100] ^= 0xff;
    std::fs::write(&file, &stored).unwrap();

    let err = reg.pull(&bad).await.unwrap_err();
    match &err {
        Error::Corrupt {
            object,
            expected,
            actual,
        } => {
            assert_eq!(object, &format!("registry-v1/objects/sha256/{}", bad.hex()));
            assert_eq!(expected, &bad);
            assert_eq!(actual, &Digest::of(&stored).to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!err.is_user_error());
    assert!(err.to_string().contains(bad.hex()), "{err}");

    let dest = fx.dir.path().join("out.pbm");
    assert!(matches!(
        reg.pull_to(&bad, &dest).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(
        !dest.exists(),
        "a corrupt pull must not leave a file behind"
    );
    assert_eq!(reg.pull(&good).await.unwrap(), Bytes::from(bytes(3, 4096)));

    let report = reg.verify().await.unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].expected, bad);

    // Pushing the right bytes again repairs the damaged copy.
    let repaired = reg.push_bytes(Bytes::from(bytes(4, 4096))).await.unwrap();
    assert!(repaired.uploaded);
    assert!(reg.verify().await.unwrap().corrupt.is_empty());
    reg.pull(&bad).await.unwrap();
}

async fn digest_prefixes_resolve(fx: Fixture) {
    let reg = &fx.registry;
    let d = push_model(reg, 5).await;
    assert_eq!(reg.resolve_digest(&d.hex()[..8]).await.unwrap(), d);
    assert_eq!(
        reg.resolve_digest(&format!("sha256:{}", &d.hex()[..12]))
            .await
            .unwrap(),
        d
    );
    assert_eq!(reg.resolve_digest(&d.to_string()).await.unwrap(), d);
    let short = reg.resolve_digest(&d.hex()[..7]).await.unwrap_err();
    assert!(matches!(short, Error::InvalidDigest { .. }) && short.is_user_error());
    let unknown = if d.hex().starts_with("00000000") {
        "11111111"
    } else {
        "00000000"
    };
    let err = reg.resolve_digest(unknown).await.unwrap_err();
    assert!(matches!(err, Error::UnknownDigest { .. }), "{err:?}");
    assert!(err.to_string().contains(unknown));
}

async fn releases_are_immutable(fx: Fixture) {
    let reg = &fx.registry;
    let digest = push_model(reg, 6).await;
    let rec = record("v1.2.0", &digest, "first");
    let created = reg.create_release(&rec).await.unwrap();
    assert!(created.created);

    // Same content, later time and another author: idempotent, the original stays.
    let mut again = rec.clone();
    again.created_at = jiff::Timestamp::now();
    again.created_by = "someone-else".into();
    let same = reg.create_release(&again).await.unwrap();
    assert!(!same.created);
    assert_eq!(same.record, rec);

    let mut changed = rec.clone();
    changed.notes = "rewritten".into();
    changed.model_digest = push_model(reg, 7).await;
    // The check before writing anything says what creating would say.
    assert_eq!(
        reg.check_new_release(&again).await.unwrap(),
        Some(rec.clone())
    );
    assert_eq!(
        reg.check_new_release(&record("v1.9.0", &digest, ""))
            .await
            .unwrap(),
        None
    );
    match reg.check_new_release(&changed).await.unwrap_err() {
        Error::ReleaseExists { differing, .. } => assert_eq!(differing, ["model_digest", "notes"]),
        other => panic!("expected ReleaseExists, got {other:?}"),
    }
    let err = reg.create_release(&changed).await.unwrap_err();
    match &err {
        Error::ReleaseExists { tag: t, differing } => {
            assert_eq!(t, &tag("v1.2.0"));
            assert_eq!(differing, &["model_digest", "notes"]);
        }
        other => panic!("expected ReleaseExists, got {other:?}"),
    }
    assert!(err.is_user_error());
    assert_eq!(reg.get_release(&tag("v1.2.0")).await.unwrap(), rec);

    // A release must name a stored artifact.
    let missing = Digest::of(b"never pushed");
    let err = reg
        .create_release(&record("v1.3.0", &missing, ""))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownDigest { .. }), "{err:?}");

    let mut bad_golden = record("v1.4.0", &digest, "");
    bad_golden.golden[0].input = serde_json::json!([1, 2]);
    assert!(matches!(
        reg.create_release(&bad_golden).await.unwrap_err(),
        Error::InvalidRecord { .. }
    ));
}

async fn unknown_tags_and_digests_are_user_errors(fx: Fixture) {
    let reg = &fx.registry;
    let err = reg.get_release(&tag("v9.9.9")).await.unwrap_err();
    assert!(matches!(err, Error::UnknownRelease { .. }));
    assert!(err.is_user_error());
    assert!(err.to_string().contains("v9.9.9"), "{err}");

    let digest = Digest::of(b"nothing");
    for err in [
        reg.pull(&digest).await.unwrap_err(),
        reg.show_artifact(&digest).await.unwrap_err(),
        reg.pull_to(&digest, &fx.dir.path().join("x"))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, Error::UnknownDigest { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(digest.hex()));
    }
    let err = reg
        .set_desired(&env("nonprod"), Some(&tag("v9.9.9")), "t", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownRelease { .. }));
}

async fn concurrent_pushes_store_each_object_once(fx: Fixture) {
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let reg = fx.client();
        tasks.push(tokio::spawn(async move {
            // Every task pushes one shared object and one of three shared others.
            let shared = reg
                .push_bytes(Bytes::from(bytes(100, 300_000)))
                .await
                .unwrap();
            let other = reg
                .push_bytes(Bytes::from(bytes(200 + i % 3, 50_000)))
                .await
                .unwrap();
            (shared.digest, other.digest)
        }));
    }
    let mut digests = BTreeSet::new();
    for t in tasks {
        let (a, b) = t.await.unwrap();
        digests.insert(a);
        digests.insert(b);
    }
    assert_eq!(digests.len(), 4);
    let report = fx.registry.verify().await.unwrap();
    assert_eq!(report.checked, 4);
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
}

async fn concurrent_creation_of_one_tag_has_one_winner(fx: Fixture) {
    let digest = push_model(&fx.registry, 8).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let reg = fx.client();
        let rec = record("v2.0.0", &digest, &format!("writer {i}"));
        tasks.push(tokio::spawn(async move {
            (rec.clone(), reg.create_release(&rec).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (rec, Ok(outcome)) => {
                assert!(outcome.created, "only identical content may be a no-op");
                winners.push(rec);
            }
            (_, Err(Error::ReleaseExists { differing, .. })) => assert_eq!(differing, ["notes"]),
            (_, Err(other)) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins");
    assert_eq!(
        fx.registry.get_release(&tag("v2.0.0")).await.unwrap(),
        winners[0]
    );
}

async fn list_releases_in_semver_order(fx: Fixture) {
    let reg = &fx.registry;
    let digest = push_model(reg, 9).await;
    for t in ["v1.10.0", "v1.2.0", "v0.9.1", "v1.2.10", "v1.2.9"] {
        reg.create_release(&record(t, &digest, "")).await.unwrap();
    }
    let tags: Vec<String> = reg
        .list_releases()
        .await
        .unwrap()
        .iter()
        .map(|r| r.tag.to_string())
        .collect();
    assert_eq!(tags, ["v0.9.1", "v1.2.0", "v1.2.9", "v1.2.10", "v1.10.0"]);
    assert_eq!(reg.list_release_tags().await.unwrap().len(), 5);
}

async fn one_candidate_per_environment(fx: Fixture) {
    let reg = &fx.registry;
    let digest = push_model(reg, 11).await;
    let (a, b) = (tag("v1.0.0"), tag("v1.1.0"));
    for t in ["v1.0.0", "v1.1.0"] {
        reg.create_release(&record(t, &digest, "")).await.unwrap();
    }
    let nonprod = env("nonprod");
    assert_eq!(reg.candidate(&nonprod).await.unwrap(), None);

    let err = reg
        .set_candidate(&nonprod, &tag("v9.9.9"), CandidateMode::Shadow, "alice")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownRelease { .. }), "{err}");
    for percent in [0.0, 100.0, -5.0, f64::NAN] {
        let mode = CandidateMode::Canary {
            percent,
            key: RequestKey::default(),
        };
        let err = reg
            .set_candidate(&nonprod, &a, mode, "alice")
            .await
            .unwrap_err();
        assert!(
            err.is_user_error() && err.to_string().contains("share"),
            "{err}"
        );
    }
    assert_eq!(reg.candidate(&nonprod).await.unwrap(), None);

    let canary = CandidateMode::Canary {
        percent: 10.0,
        key: RequestKey::Field("customer_id".into()),
    };
    let set = reg
        .set_candidate(&nonprod, &a, canary, "alice")
        .await
        .unwrap();
    assert_eq!(reg.candidate(&nonprod).await.unwrap().as_ref(), Some(&set));

    // A second candidate is refused, naming the first; the first is untouched.
    let err = reg
        .set_candidate(&nonprod, &b, CandidateMode::Shadow, "bob")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CandidateExists { .. }), "{err}");
    assert!(err.to_string().contains("canary of v1.0.0"), "{err}");
    assert_eq!(reg.candidate(&nonprod).await.unwrap().as_ref(), Some(&set));

    assert_eq!(reg.clear_candidate(&nonprod).await.unwrap(), Some(set));
    assert_eq!(reg.clear_candidate(&nonprod).await.unwrap(), None);
    let shadow = reg
        .set_candidate(&nonprod, &b, CandidateMode::Shadow, "bob")
        .await
        .unwrap();
    assert_eq!(shadow.mode, CandidateMode::Shadow);
}

async fn env_state_is_compare_and_swap(fx: Fixture) {
    let reg = &fx.registry;
    let digest = push_model(reg, 10).await;
    let (a, b) = (tag("v1.0.0"), tag("v1.1.0"));
    reg.create_release(&record("v1.0.0", &digest, ""))
        .await
        .unwrap();
    reg.create_release(&record("v1.1.0", &digest, ""))
        .await
        .unwrap();
    let nonprod = env("nonprod");

    assert_eq!(reg.env_state(&nonprod).await.unwrap(), None);
    let s1 = reg
        .set_desired(&nonprod, Some(&a), "alice", Some(0))
        .await
        .unwrap();
    assert_eq!((s1.generation, s1.desired.as_ref()), (1, Some(&a)));

    // A writer holding a stale generation is refused.
    let err = reg
        .set_desired(&nonprod, Some(&b), "bob", Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 0,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );

    let s2 = reg
        .set_desired(&nonprod, Some(&b), "bob", Some(1))
        .await
        .unwrap();
    assert_eq!((s2.generation, s2.previous.as_ref()), (2, Some(&a)));

    // Unconditional writers racing: every one lands, one generation each.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let reg = fx.client();
        let (a, b, e) = (a.clone(), b.clone(), nonprod.clone());
        tasks.push(tokio::spawn(async move {
            let t = if i % 2 == 0 { a } else { b };
            reg.set_desired(&e, Some(&t), &format!("w{i}"), None)
                .await
                .unwrap()
                .generation
        }));
    }
    let mut gens = BTreeSet::new();
    for t in tasks {
        gens.insert(t.await.unwrap());
    }
    assert_eq!(
        gens,
        (3..=14).collect::<BTreeSet<u64>>(),
        "each writer got its own generation"
    );
    assert_eq!(
        reg.env_state(&nonprod).await.unwrap().unwrap().generation,
        14
    );
    assert_eq!(reg.list_envs().await.unwrap(), [nonprod]);
}

async fn concurrent_history_appends_lose_nothing(fx: Fixture) {
    let prod = env("prod");
    let v = tag("v1.0.0");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let reg = fx.client();
        let (prod, v) = (prod.clone(), v.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..8 {
                let e = entry(
                    &format!("w{w}"),
                    Some(&v),
                    Outcome::Started,
                    &format!("{w}-{i}"),
                );
                reg.append_history(&prod, e).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let history = fx.registry.history(&prod).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=64).collect::<Vec<u64>>());
    let messages: BTreeSet<&str> = history.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages.len(), 64, "no entry lost or duplicated");

    let verified = entry("deploy", Some(&tag("v0.9.0")), Outcome::Verified, "ok");
    fx.registry.append_history(&prod, verified).await.unwrap();
    let failed = entry("deploy", Some(&v), Outcome::Failed, "smoke mismatch");
    let last = fx.registry.append_history(&prod, failed).await.unwrap();
    assert_eq!(last.seq, 66);
    assert_eq!(
        fx.registry.last_verified(&prod, Some(&v)).await.unwrap(),
        Some(tag("v0.9.0"))
    );
}

async fn lease_held_expired_released_broken(fx: Fixture) {
    let reg = &fx.registry;
    let other = fx.client();
    let prod = env("prod");
    let hour = Duration::from_secs(3600);

    assert_eq!(reg.inspect_lease(&prod).await.unwrap(), None);
    let mine = reg
        .acquire_lease(&prod, "alice", "deploy v1.0.0", hour)
        .await
        .unwrap();
    let err = other
        .acquire_lease(&prod, "bob", "deploy v1.1.0", hour)
        .await
        .unwrap_err();
    match &err {
        Error::LeaseHeld {
            holder,
            operation,
            since,
            expires_at,
            ..
        } => {
            assert_eq!(holder, "alice");
            assert_eq!(operation, "deploy v1.0.0");
            assert_eq!((since, expires_at), (&mine.acquired_at, &mine.expires_at));
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    assert!(err.to_string().contains("alice"));
    let renewed = reg.renew_lease(&mine, hour * 2).await.unwrap();
    assert!(renewed.expires_at > mine.expires_at);
    reg.release_lease(&mine).await.unwrap();
    assert_eq!(reg.inspect_lease(&prod).await.unwrap(), None);

    // An expired lease is taken over, and its former holder learns it lost it.
    let short = reg
        .acquire_lease(&prod, "alice", "deploy", common::SHORT)
        .await
        .unwrap();
    wait_until(
        "the short lease to expire",
        Duration::from_secs(30),
        || async {
            let lease = reg.inspect_lease(&prod).await.unwrap().unwrap();
            !lease.is_active(jiff::Timestamp::now())
        },
    )
    .await;
    let bobs = other
        .acquire_lease(&prod, "bob", "rollback", hour)
        .await
        .unwrap();
    assert!(matches!(
        reg.renew_lease(&short, hour).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        reg.release_lease(&short).await,
        Err(Error::LeaseLost { .. })
    ));

    // Breaking a lease deliberately frees the environment.
    let broken = reg.break_lease(&prod).await.unwrap().unwrap();
    assert_eq!(broken.holder, "bob");
    assert_eq!(reg.inspect_lease(&prod).await.unwrap(), None);
    reg.acquire_lease(&prod, "carol", "deploy", hour)
        .await
        .unwrap();
    assert!(matches!(
        other.release_lease(&bobs).await,
        Err(Error::LeaseLost { .. })
    ));

    // A mangled lease blocks deploys with a clear error, and can still be broken.
    std::fs::write(fx.key_file("envs/prod/lease.json"), b"{ not json").unwrap();
    let err = other
        .acquire_lease(&prod, "bob", "deploy", hour)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Decode { object, .. } if object == "registry-v1/envs/prod/lease.json"),
        "{err:?}"
    );
    assert_eq!(reg.break_lease(&prod).await.unwrap(), None);
    other
        .acquire_lease(&prod, "bob", "deploy", hour)
        .await
        .unwrap();
}

/// The child process that `killed_writer_leaves_registry_readable` starts (by running
/// this test binary again) and kills: it writes objects, releases, state and history as
/// fast as it can. Ignored in normal runs, where it has no registry to write to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the writer process killed by killed_writer_leaves_registry_readable; only it runs this"]
async fn child_writer() {
    let reg = Fixture::open_from_child_env()
        .expect("child_writer runs only as the child of killed_writer_leaves_registry_readable");
    let nonprod = env("nonprod");
    let start: u64 = std::env::var("PREDICT_BUY_TEST_CHILD_START")
        .unwrap()
        .parse()
        .unwrap();
    let big = std::path::PathBuf::from(std::env::var("PREDICT_BUY_TEST_CHILD_DIR").unwrap())
        .join(format!("child-{start}.bin"));
    for i in start.. {
        // A multipart upload (four parts, long enough for the parent to see it in
        // flight) as well as a single PUT, so a kill can land in the middle of either.
        std::fs::write(&big, bytes(i + 1_000_000, 30 << 20)).unwrap();
        let file = reg.push_file(&big).await.unwrap();
        println!("ACK object {}", file.digest);
        let pushed = reg
            .push_bytes(Bytes::from(bytes(i, 1 << 20)))
            .await
            .unwrap();
        println!("ACK object {}", pushed.digest);
        let t = ReleaseTag::parse(&format!("v3.0.{i}")).unwrap();
        reg.create_release(&record(&t.to_string(), &pushed.digest, "child"))
            .await
            .unwrap();
        println!("ACK release {t}");
        let state = reg
            .set_desired(&nonprod, Some(&t), "child", None)
            .await
            .unwrap();
        println!("ACK generation {}", state.generation);
        let appended = reg
            .append_history(
                &nonprod,
                entry("child", Some(&t), Outcome::Verified, "child"),
            )
            .await
            .unwrap();
        println!("ACK history {}", appended.seq);
        let lease = reg
            .acquire_lease(&nonprod, "child", "loop", Duration::from_millis(1))
            .await;
        if let Ok(lease) = lease {
            let _ = reg.release_lease(&lease).await;
        }
    }
}

async fn killed_writer_leaves_registry_readable(fx: Fixture) {
    let reg = &fx.registry;
    let nonprod = env("nonprod");
    let exe = std::env::current_exe().unwrap();
    let mut start = 0u64;
    let mut rounds_with_leftovers = 0;
    for round in 0..3u64 {
        let before = reg
            .env_state(&nonprod)
            .await
            .unwrap()
            .map_or(0, |s| s.generation);
        let known: Vec<_> = reg.interrupted_writes().await.unwrap();
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .envs(fx.child_env())
            .env("PREDICT_BUY_TEST_CHILD_START", start.to_string())
            .env("PREDICT_BUY_TEST_CHILD_DIR", fx.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it get going, then kill it while a write is in flight: as soon as a
        // staging file (or an unfinished upload) of this child shows up.
        let child_exited = |child: &mut std::process::Child| {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the writer process exited on its own ({status}) before it was killed");
            }
        };
        let deadline = Duration::from_secs(120);
        wait_until("the writer to make progress", deadline, || {
            child_exited(&mut child);
            async {
                let generation = reg
                    .env_state(&nonprod)
                    .await
                    .unwrap()
                    .map_or(0, |s| s.generation);
                generation >= before + 2
            }
        })
        .await;
        wait_until("a write in flight", deadline, || {
            child_exited(&mut child);
            async {
                let now = reg.interrupted_writes().await.unwrap();
                now.iter().any(|w| !known.contains(w))
            }
        })
        .await;
        child.kill().unwrap();
        child.wait().unwrap();
        let mut acks = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut acks).unwrap();
        // The write seen in flight may have finished just before the kill; most rounds
        // leave a leftover, and at least one must (checked below).
        let left = reg.interrupted_writes().await.unwrap();
        if left.iter().any(|w| !known.contains(w)) {
            rounds_with_leftovers += 1;
        }

        // Everything the killed writer left must be whole and consistent.
        let report = reg.verify().await.unwrap();
        assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
        assert_eq!(report.interrupted, left, "verify lists the leftovers");
        // And everything it was told had been written is there.
        let history_seqs: BTreeSet<u64> = reg
            .history(&nonprod)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        let generation = reg
            .env_state(&nonprod)
            .await
            .unwrap()
            .map_or(0, |s| s.generation);
        let mut acked = 0;
        for line in acks.lines() {
            let Some(ack) = line.strip_prefix("ACK ") else {
                continue;
            };
            acked += 1;
            match ack.split_once(' ').unwrap() {
                ("object", d) => {
                    reg.pull(&Digest::parse(d).unwrap()).await.unwrap();
                }
                ("release", t) => {
                    reg.get_release(&tag(t)).await.unwrap();
                }
                ("generation", g) => assert!(g.parse::<u64>().unwrap() <= generation),
                ("history", seq) => assert!(history_seqs.contains(&seq.parse().unwrap())),
                other => panic!("unexpected ack {other:?}"),
            }
        }
        assert!(acked >= 8, "the writer acknowledged only {acked} writes");
        let releases = reg.list_releases().await.unwrap();
        assert!(!releases.is_empty());
        for r in &releases {
            assert!(
                reg.has_artifact(&r.model_digest).await.unwrap(),
                "{} has no artifact",
                r.tag
            );
        }
        let state = reg
            .env_state(&nonprod)
            .await
            .unwrap()
            .expect("state was written");
        let desired = state.desired.expect("desired release");
        reg.get_release(&desired).await.unwrap();
        let history = reg.history(&nonprod).await.unwrap();
        assert_eq!(
            history.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=history.len() as u64).collect::<Vec<_>>()
        );
        // No stale lock survives the writer: the next writers go through at once.
        let next = releases.last().unwrap().tag.clone();
        let after = tokio::time::timeout(Duration::from_secs(10), async {
            reg.set_desired(&nonprod, Some(&next), "parent", None)
                .await
                .unwrap();
            reg.append_history(
                &nonprod,
                entry("parent", Some(&next), Outcome::Interrupted, ""),
            )
            .await
            .unwrap()
        })
        .await
        .expect("writes after a killed writer must not hang");
        assert_eq!(after.seq, history.len() as u64 + 1);
        start = releases.len() as u64 + 1000 * (round + 1);
    }
    assert!(
        rounds_with_leftovers >= 1,
        "no kill landed in the middle of a write in 3 rounds"
    );

    // The leftovers are on the backend's own storage, and the sweep finds them all.
    let leftovers = reg.interrupted_writes().await.unwrap();
    assert!(!leftovers.is_empty());
    assert!(
        !fx.staging_files_on_disk().is_empty(),
        "the backend's storage shows no leftover although the registry lists {leftovers:?}"
    );
    let artifacts = reg.list_artifacts().await.unwrap();
    let releases = reg.list_releases().await.unwrap();
    let history = reg.history(&nonprod).await.unwrap();
    // Young leftovers may belong to a live writer: an hour's threshold keeps them.
    let young = reg
        .clean_interrupted_writes(Duration::from_secs(3600), GcMode::Remove)
        .await
        .unwrap();
    assert!(young.removed.is_empty(), "{:?}", young.removed);
    assert_eq!(young.kept, leftovers);
    let dry = reg
        .clean_interrupted_writes(Duration::ZERO, GcMode::DryRun)
        .await
        .unwrap();
    assert_eq!(dry.removed, leftovers);
    assert_eq!(
        reg.interrupted_writes().await.unwrap(),
        leftovers,
        "a dry run removes nothing"
    );
    let swept = reg
        .clean_interrupted_writes(Duration::ZERO, GcMode::Remove)
        .await
        .unwrap();
    assert_eq!(swept.removed, leftovers);
    assert!(reg.interrupted_writes().await.unwrap().is_empty());
    assert_eq!(
        fx.staging_files_on_disk(),
        Vec::<std::path::PathBuf>::new(),
        "staging files remain after cleaning"
    );
    // Nothing readable went.
    assert_eq!(reg.list_artifacts().await.unwrap(), artifacts);
    assert_eq!(reg.list_releases().await.unwrap(), releases);
    assert_eq!(reg.history(&nonprod).await.unwrap(), history);
    assert!(reg.verify().await.unwrap().corrupt.is_empty());
}

async fn reads_of_a_missing_registry_create_nothing(fx: Fixture) {
    // Another prefix (or folder) beside the fixture's, never written to.
    let (url, on_disk) = match fx.backend {
        Backend::File => {
            let root = fx.dir.path().join("elsewhere/reg");
            let url = RegistryUrl::parse(&format!("file://{}", root.display())).unwrap();
            (url, fx.dir.path().join("elsewhere"))
        }
        Backend::S3 => {
            let url = RegistryUrl::parse(&format!("s3://{}/other/team", common::BUCKET)).unwrap();
            (url, fx.dir.path().join(common::BUCKET).join("other"))
        }
    };
    // The fixture's own registry holds something, which must not count for the other.
    push_model(&fx.registry, 20).await;
    let err = Registry::open_existing_with(&url, &fx.options)
        .await
        .unwrap_err();
    match &err {
        Error::NoRegistry { registry, reason } => {
            assert!(registry.contains(&url.to_string()), "{err}");
            let expected = match fx.backend {
                Backend::File => "registry-v1` ",
                Backend::S3 => "under `other/team/registry-v1/`",
            };
            assert!(
                format!("{reason} ").contains(expected),
                "{expected:?} in {reason:?}"
            );
        }
        other => panic!("expected NoRegistry, got {other:?}"),
    }
    assert_eq!(err.exit_code(), 2);
    assert!(!on_disk.exists(), "looking created {}", on_disk.display());

    // Once a writer opened it and wrote, readers find it.
    let writer = Registry::open_with(&url, &fx.options).unwrap();
    let digest = push_model(&writer, 21).await;
    let reader = Registry::open_existing_with(&url, &fx.options)
        .await
        .unwrap();
    assert_eq!(reader.list_artifacts().await.unwrap()[0].digest, digest);
    // The fixture's registry exists too.
    Registry::open_existing_with(&fx.url, &fx.options)
        .await
        .unwrap();
}

/// Leaves one leftover of an interrupted write on the backend, as a killed writer
/// would, `age` old where the backend lets us choose (a staging file's time); an S3
/// upload is as old as it is.
async fn leave_interrupted_write(fx: &Fixture, seed: u64, age: Duration) -> String {
    let digest = Digest::of(&bytes(seed, 10));
    let rel = format!("objects/sha256/{}", digest.hex());
    match fx.backend {
        Backend::File => {
            let path = fx.key_file(&format!("{rel}#{seed}"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let file = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &file, &bytes(seed, 5000)).unwrap();
            let then = std::time::SystemTime::now() - age;
            file.set_times(std::fs::FileTimes::new().set_modified(then))
                .unwrap();
        }
        Backend::S3 => {
            use object_store::ObjectStoreExt;
            let s3 = object_store::aws::AmazonS3Builder::new()
                .with_endpoint(&fx.s3.as_ref().unwrap().endpoint)
                .with_allow_http(true)
                .with_bucket_name(common::BUCKET)
                .with_region("us-east-1")
                .with_access_key_id(common::ACCESS_KEY)
                .with_secret_access_key(common::SECRET_KEY)
                .build()
                .unwrap();
            let key =
                object_store::path::Path::from(format!("{}/registry-v1/{rel}", common::PREFIX));
            let mut upload = s3.put_multipart(&key).await.unwrap();
            upload.put_part(bytes(seed, 5 << 20).into()).await.unwrap();
            // Dropped without `complete` or `abort`: the writer died here.
        }
    }
    format!("registry-v1/{rel}")
}

async fn gc_removes_only_old_leftovers(fx: Fixture) {
    let reg = &fx.registry;
    let digest = push_model(reg, 30).await;
    reg.create_release(&record("v1.0.0", &digest, ""))
        .await
        .unwrap();
    reg.append_history(
        &env("prod"),
        entry("t", Some(&tag("v1.0.0")), Outcome::Verified, ""),
    )
    .await
    .unwrap();
    assert!(reg.interrupted_writes().await.unwrap().is_empty());
    assert!(reg.verify().await.unwrap().interrupted.is_empty());

    let hour = Duration::from_secs(3600);
    let old = leave_interrupted_write(&fx, 31, 2 * hour).await;
    let listed = reg.interrupted_writes().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].target, old);
    let age = listed[0].age(jiff::Timestamp::now());
    match fx.backend {
        Backend::File => {
            assert_eq!(listed[0].size, Some(5000));
            assert!(age >= 2 * hour && age < 3 * hour, "{age:?}");
        }
        // S3 reports neither the size of an unfinished upload nor lets us back-date it.
        Backend::S3 => assert!(listed[0].size.is_none() && age < hour, "{age:?}"),
    }
    assert_eq!(reg.verify().await.unwrap().interrupted, listed);

    // A leftover younger than the threshold stays: a writer may still own it.
    let fresh = leave_interrupted_write(&fx, 32, Duration::ZERO).await;
    let threshold = match fx.backend {
        Backend::File => hour,
        Backend::S3 => Duration::ZERO,
    };
    let dry = reg
        .clean_interrupted_writes(threshold, GcMode::DryRun)
        .await
        .unwrap();
    let targets = |ws: &[predict_buy_registry::InterruptedWrite]| {
        ws.iter().map(|w| w.target.clone()).collect::<BTreeSet<_>>()
    };
    assert_eq!(
        reg.interrupted_writes().await.unwrap().len(),
        2,
        "a dry run removes nothing"
    );
    let swept = reg
        .clean_interrupted_writes(threshold, GcMode::Remove)
        .await
        .unwrap();
    assert_eq!(targets(&swept.removed), targets(&dry.removed));
    let remaining = reg.interrupted_writes().await.unwrap();
    match fx.backend {
        Backend::File => {
            assert_eq!(targets(&swept.removed), BTreeSet::from([old.clone()]));
            assert_eq!(targets(&swept.kept), BTreeSet::from([fresh.clone()]));
            assert_eq!(swept.bytes_freed(), 5000);
            assert_eq!(targets(&remaining), BTreeSet::from([fresh]));
        }
        Backend::S3 => {
            assert_eq!(targets(&swept.removed), BTreeSet::from([old, fresh]));
            assert!(remaining.is_empty(), "{remaining:?}");
            assert!(fx.staging_files_on_disk().is_empty());
        }
    }
    // Artifacts and records are never leftovers.
    assert_eq!(reg.list_artifacts().await.unwrap()[0].digest, digest);
    reg.pull(&digest).await.unwrap();
    reg.get_release(&tag("v1.0.0")).await.unwrap();
    assert_eq!(reg.history(&env("prod")).await.unwrap().len(), 1);
}

#[test]
fn bad_urls_are_refused_with_the_reason() {
    for (url, why) in [
        ("http://registry.example/x", "unsupported scheme `http://`"),
        ("s3://", "no bucket name"),
        ("ftp://host/dir", "unsupported scheme `ftp://`"),
    ] {
        let err = RegistryUrl::parse(url).unwrap_err();
        assert!(err.is_user_error());
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains(url) && msg.contains(why), "{msg}");
    }
}

#[tokio::test]
async fn unreachable_endpoint_fails_quickly_naming_it() {
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let url = RegistryUrl::parse("s3://models/reg").unwrap();
    let reg = Registry::open_with(&url, &common::s3_options(&endpoint)).unwrap();
    let started = Instant::now();
    let err = reg.get_release(&tag("v1.0.0")).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert!(!err.is_user_error());
    let msg = err.to_string();
    assert!(
        msg.contains(&endpoint) && msg.contains("s3://models/reg"),
        "{msg}"
    );
    assert!(msg.contains("registry-v1/releases/v1.0.0.json"), "{msg}");
}

/// Every variable from which the S3 client could take credentials.
const CREDENTIAL_VARS: [&str; 8] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_SKIP_SIGNATURE",
    predict_buy_registry::INSTANCE_CREDENTIALS_VAR,
];

/// Runs in a child process with every credential variable removed, so the check holds
/// whatever credentials the machine running the suite has.
#[test]
fn missing_credentials_are_reported() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "missing_credentials_child", "--ignored"])
        .env("PREDICT_BUY_TEST_NO_CREDENTIALS", "1")
        .env("AWS_REGION", "us-east-1");
    for var in CREDENTIAL_VARS {
        child.env_remove(var);
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "the child process of missing_credentials_are_reported; only it runs this"]
fn missing_credentials_child() {
    assert_eq!(
        std::env::var("PREDICT_BUY_TEST_NO_CREDENTIALS").as_deref(),
        Ok("1"),
        "run only by missing_credentials_are_reported"
    );
    let url = RegistryUrl::parse("s3://models").unwrap();
    let endpoint = |options: S3Options| RegistryOptions {
        s3: S3Options {
            endpoint: Some("http://127.0.0.1:9".into()),
            ..options
        },
    };
    let err = Registry::open_with(&url, &endpoint(S3Options::default())).unwrap_err();
    assert!(matches!(err, Error::MissingCredentials { .. }), "{err:?}");
    assert!(err.to_string().contains("set AWS_ACCESS_KEY_ID"), "{err}");
    assert!(err.is_user_error());

    let half = S3Options {
        access_key_id: Some("key".into()),
        ..S3Options::default()
    };
    let err = Registry::open_with(&url, &endpoint(half)).unwrap_err();
    assert!(
        err.to_string()
            .contains("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
        "{err}"
    );
    // Credentials given as options are enough.
    let full = S3Options {
        access_key_id: Some(common::ACCESS_KEY.into()),
        secret_access_key: Some(common::SECRET_KEY.into()),
        ..S3Options::default()
    };
    Registry::open_with(&url, &endpoint(full)).unwrap();
}

#[test]
fn pointer_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("model.pbm");
    let pointer = ArtifactPointer {
        digest: Digest::of(b"model"),
        size: 5,
        path: "models/model.pbm".into(),
    };
    let path = ArtifactPointer::path_for(&artifact);
    assert!(path.to_string_lossy().ends_with("model.pbm.ref.yaml"));
    pointer.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&pointer.digest.to_string()), "{text}");
    assert_eq!(ArtifactPointer::read(&path).unwrap(), pointer);

    std::fs::write(&path, "digest: sha256:nothex\nsize: 1\npath: x\n").unwrap();
    let err = ArtifactPointer::read(&path).unwrap_err();
    assert!(matches!(err, Error::Pointer { .. }) && err.is_user_error());
}

#[tokio::test]
async fn file_registry_accepts_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let rel = pathdiff(dir.path());
    let url = RegistryUrl::parse(&format!("file://{rel}/reg")).unwrap();
    let reg = Arc::new(Registry::open(&url).unwrap());
    let d = push_model(&reg, 11).await;
    assert!(
        dir.path()
            .join("reg/registry-v1/objects/sha256")
            .join(d.hex())
            .exists()
    );
}

/// `path` relative to the current directory (tests run in the crate folder).
fn pathdiff(path: &std::path::Path) -> String {
    let cwd = std::env::current_dir().unwrap();
    let depth = cwd.components().count() - 1;
    let up = "../".repeat(depth);
    format!("{up}{}", path.strip_prefix("/").unwrap().display())
}
