//! The conformance suite against the in-memory engine, plus its fault injection.

use std::sync::Arc;

use meridian_kv::engine::Engine;
use meridian_kv::{KvError, MaybeCommitted};
use meridian_kv_conformance::Backend;
use meridian_kv_memory::{Fault, MemoryEngine};

struct Memory(MemoryEngine);

impl Backend for Memory {
    fn database(&self) -> meridian_kv::Database {
        let engine: Arc<dyn Engine> = Arc::new(self.0.clone());
        meridian_kv_conformance::over_engine(engine)
    }
}

meridian_kv_conformance::conformance_suite!(crate::Memory(meridian_kv_memory::MemoryEngine::new()));

#[tokio::test]
async fn commit_unknown_result_is_retried_as_maybe_committed() {
    let engine = MemoryEngine::new();
    let db = meridian_kv_conformance::open(&Memory(engine.clone()));
    engine.inject(Fault::ApplyThenFail);
    let seen = std::sync::Mutex::new(Vec::new());
    db.run(|tx, maybe: MaybeCommitted| {
        seen.lock().unwrap().push(maybe.0);
        async move {
            // Idempotent: an add keyed by a request id would check first; here
            // the closure records the flag and writes a plain value.
            tx.set(b"k", b"v")
        }
    })
    .await
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![false, true]);

    engine.inject(Fault::FailWithoutApplying);
    let tx = db.begin();
    tx.set(b"lost", b"1").unwrap();
    let outcome = tx.commit().await;
    assert!(matches!(&outcome, Err(e) if e.is_maybe_committed()));
    let check = db.begin();
    assert_eq!(check.get(b"lost").await.unwrap(), None);
    let _: Option<KvError> = None;
}

/// Fail-stop: once the engine failed for good, the database says why and
/// refuses every later commit without touching the engine; reads still
/// see what was written before.
#[tokio::test]
async fn a_poisoned_engine_stops_the_database() {
    let engine = MemoryEngine::new();
    let db = meridian_kv_conformance::open(&Memory(engine.clone()));
    db.run(|tx, _| async move { tx.set(b"before", b"1") })
        .await
        .unwrap();
    let mut failure = db.failure();
    assert_eq!(*failure.borrow_and_update(), None);

    engine.inject(Fault::Poison);
    let tx = db.begin();
    tx.set(b"lost", b"1").unwrap();
    let outcome = tx.commit().await;
    assert!(
        matches!(&outcome, Err(e) if e.is_maybe_committed()),
        "the failing write itself is of unknown outcome: {outcome:?}"
    );
    failure.changed().await.unwrap();
    assert!(
        failure
            .borrow()
            .as_deref()
            .is_some_and(|r| r.contains("Poison")),
        "{:?}",
        failure.borrow()
    );
    let written = engine.batches_written();
    let refused = db.run(|tx, _| async move { tx.set(b"after", b"1") }).await;
    assert!(
        matches!(&refused, Err(KvError::StoreFailed { .. })),
        "not retried, refused: {refused:?}"
    );
    assert_eq!(
        engine.batches_written(),
        written,
        "nothing more reaches the engine"
    );
    let check = db.begin();
    assert_eq!(
        check.get(b"before").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(check.get(b"lost").await.unwrap(), None);
}

/// A write in flight is timed from its start: what the commit-stall
/// watchdog reads.
#[tokio::test]
async fn the_write_in_flight_is_timed() {
    let engine = MemoryEngine::new();
    let db = meridian_kv_conformance::open(&Memory(engine.clone()));
    assert_eq!(db.write_in_flight_for(), None);
    engine.inject(Fault::Hang);
    let writer = db.clone();
    let commit =
        tokio::spawn(async move { writer.run(|tx, _| async move { tx.set(b"k", b"v") }).await });
    while db.write_in_flight_for().is_none() {
        tokio::task::yield_now().await;
    }
    engine.release();
    commit.await.unwrap().unwrap();
    assert_eq!(db.write_in_flight_for(), None);
}

// Single-threaded runtime: all 200 commits are queued before the committer
// runs again, so how they batch does not depend on timing.
#[tokio::test]
async fn concurrent_commits_share_batches() {
    let engine = MemoryEngine::new();
    let db = meridian_kv_conformance::open(&Memory(engine.clone()));
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.run(|tx, _| async move { tx.set(&i.to_be_bytes(), b"x") })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        engine.batches_written() < 200,
        "group commit: {} batches for 200 commits",
        engine.batches_written()
    );
}

#[tokio::test]
async fn a_watch_only_commit_writes_nothing() {
    let engine = MemoryEngine::new();
    let db = meridian_kv_conformance::open(&Memory(engine.clone()));
    db.run(|tx, _| async move { tx.set(b"head", b"0") })
        .await
        .unwrap();
    let before = engine.batches_written();
    let tx = db.begin();
    let watch = tx.watch(b"head");
    tx.commit().await.unwrap();
    assert_eq!(
        engine.batches_written(),
        before,
        "no engine write for a watch"
    );
    db.run(|tx, _| async move { tx.set(b"head", b"1") })
        .await
        .unwrap();
    watch.await.expect("the watch still fires");
}

/// A relaxed commit is answered and readable at once, and lost with the
/// machine until a commit that is not relaxed follows it; that one takes
/// it to the disk. A commit that is not relaxed is never lost.
#[tokio::test]
async fn a_relaxed_commit_reaches_the_disk_with_the_next_durable_one() {
    let engine = MemoryEngine::new();
    let read = |db: meridian_kv::Database, key: &'static [u8]| async move {
        db.begin().get(key).await.unwrap()
    };
    let relaxed = |db: meridian_kv::Database, key: &'static [u8]| async move {
        db.run(|tx, _| async move {
            tx.relax_durability();
            tx.set(key, b"1")
        })
        .await
        .unwrap();
    };
    let durable = |db: meridian_kv::Database, key: &'static [u8]| async move {
        db.run(|tx, _| async move { tx.set(key, b"1") })
            .await
            .unwrap();
    };

    let db = meridian_kv_conformance::open(&Memory(engine.clone()));
    durable(db.clone(), b"first").await;
    relaxed(db.clone(), b"relaxed-then-lost").await;
    assert!(read(db.clone(), b"relaxed-then-lost").await.is_some());
    db.close().await;
    engine.lose_unsynced();

    let db = meridian_kv_conformance::open(&Memory(engine.clone()));
    assert!(read(db.clone(), b"first").await.is_some());
    assert_eq!(read(db.clone(), b"relaxed-then-lost").await, None);
    relaxed(db.clone(), b"relaxed-then-kept").await;
    durable(db.clone(), b"second").await;
    db.close().await;
    engine.lose_unsynced();

    let db = meridian_kv_conformance::open(&Memory(engine.clone()));
    assert!(read(db.clone(), b"relaxed-then-kept").await.is_some());
    assert!(read(db.clone(), b"second").await.is_some());
}
