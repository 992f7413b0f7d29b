//! Relaxed commits on fjall: readable at once, on disk after a reopen, and
//! the fsync the engine schedules for them never keeps a closed database
//! open (its directory lock would refuse the reopen).

use common::open;

mod common;

/// One runtime thread: a scheduled fsync still asleep when the database
/// closes must not hold it, or the reopen waits on a lock that thread
/// would have to release.
#[tokio::test(flavor = "current_thread")]
async fn a_closed_engine_reopens_at_once_after_a_relaxed_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    db.run(|tx, _| async move {
        tx.relax_durability();
        tx.set(b"cursor", b"42")
    })
    .await
    .expect("relaxed commit");
    assert_eq!(
        db.begin().get(b"cursor").await.expect("read").as_deref(),
        Some(b"42".as_slice()),
        "readable at once"
    );
    db.close().await;

    let db = open(dir.path());
    assert_eq!(
        db.begin().get(b"cursor").await.expect("read").as_deref(),
        Some(b"42".as_slice()),
        "kept across the reopen"
    );
    db.close().await;
}
