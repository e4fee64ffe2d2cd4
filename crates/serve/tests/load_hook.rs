//! The hook the binary uses to give a load's freed memory back: it runs once after
//! every load, whether the model is taken or refused, and not when there was nothing
//! to load. In a test binary of its own because the hook is process-wide.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{artifacts, test_limits, write_model};
use predict_buy_model::digest_of;
use predict_buy_serve::{AppState, ModelSource, ReloadError, ReloadOutcome, after_each_load};

static LOADS: AtomicUsize = AtomicUsize::new(0);

fn count_load() {
    LOADS.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test]
async fn the_hook_runs_after_every_load_taken_or_refused() {
    after_each_load(count_load);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pbm");
    let (a, b) = artifacts();
    write_model(&path, a);
    let state = AppState::new(ModelSource::File(path.clone()), test_limits(), None);

    let outcome = state.reload(true).await.unwrap();
    assert!(
        matches!(outcome, ReloadOutcome::Swapped { .. }),
        "{outcome:?}"
    );
    assert_eq!(LOADS.load(Ordering::SeqCst), 1);
    assert_eq!(state.current().unwrap().digest, digest_of(a));

    // The same file again is loaded (and found unchanged): one more load.
    let outcome = state.reload(true).await.unwrap();
    assert!(
        matches!(outcome, ReloadOutcome::Unchanged { .. }),
        "{outcome:?}"
    );
    assert_eq!(LOADS.load(Ordering::SeqCst), 2);

    // Refused at the parse and at the self-check: each is a load that freed its
    // buffers, and the model before keeps serving.
    write_model(&path, &b[..b.len() / 2]);
    let err = state.reload(true).await.unwrap_err();
    assert!(matches!(err, ReloadError::Load { .. }), "{err:?}");
    assert_eq!(LOADS.load(Ordering::SeqCst), 3);
    write_model(&path, &common::self_check_failing_artifact());
    let err = state.reload(true).await.unwrap_err();
    assert!(matches!(err, ReloadError::SelfCheck { .. }), "{err:?}");
    assert_eq!(LOADS.load(Ordering::SeqCst), 4);
    assert_eq!(state.current().unwrap().digest, digest_of(a));

    // No file, no load.
    std::fs::remove_file(&path).unwrap();
    let err = state.reload(true).await.unwrap_err();
    assert!(matches!(err, ReloadError::Read { .. }), "{err:?}");
    assert_eq!(LOADS.load(Ordering::SeqCst), 4);

    // A different model loads and serves.
    write_model(&path, b);
    let outcome = state.reload(true).await.unwrap();
    assert!(
        matches!(outcome, ReloadOutcome::Swapped { .. }),
        "{outcome:?}"
    );
    assert_eq!(LOADS.load(Ordering::SeqCst), 5);
    assert_eq!(state.current().unwrap().digest, digest_of(b));
}
