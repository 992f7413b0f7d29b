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
