//! The committer's pipeline, observed through the memory engine behind a
//! gate: each write waits for the test's permission, so the test sees what
//! is resolved, visible and answered while a batch is being written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use meridian_kv::engine::{Engine, EngineBatch, EngineSnapshot};
use meridian_kv::{CommitInfo, Database, DatabaseOptions, KvError};
use meridian_kv_memory::{Fault, MemoryEngine};
use meridian_seams::clock::ManualClock;
use meridian_seams::{Rng, SharedClock};
use tokio::sync::Semaphore;

/// The memory engine, whose writes start only once the test adds a permit;
/// counts the writes begun.
#[derive(Clone)]
struct GatedEngine {
    inner: MemoryEngine,
    gate: Arc<Semaphore>,
    begun: Arc<Mutex<usize>>,
}

impl Engine for GatedEngine {
    fn snapshot(&self) -> Box<dyn EngineSnapshot> {
        self.inner.snapshot()
    }

    fn write(&self, batch: Arc<EngineBatch>) -> BoxFuture<'static, Result<(), KvError>> {
        *self.begun.lock().expect("begun") += 1;
        let engine = self.clone();
        Box::pin(async move {
            engine.gate.acquire().await.expect("gate").forget();
            engine.inner.write(batch).await
        })
    }
}

fn open() -> (Database, GatedEngine) {
    let engine = GatedEngine {
        inner: MemoryEngine::new(),
        gate: Arc::new(Semaphore::new(0)),
        begun: Arc::default(),
    };
    let clock: SharedClock = Arc::new(ManualClock::new(1_000));
    let db = Database::open(
        Arc::new(engine.clone()),
        clock,
        Rng::seeded(1),
        DatabaseOptions::default(),
    )
    .expect("open");
    (db, engine)
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

async fn add(db: &Database, key: &'static [u8]) -> Result<CommitInfo, KvError> {
    let tx = db.begin();
    tx.atomic_add(key, 1)?;
    tx.commit().await
}

/// Adds 1 to `counter` in a task of its own.
fn spawn_add(db: &Database) -> tokio::task::JoinHandle<Result<CommitInfo, KvError>> {
    let db = db.clone();
    tokio::spawn(async move { add(&db, b"counter").await })
}

#[tokio::test]
async fn the_next_batch_is_resolved_while_one_is_written_and_answered_after_it() {
    let (db, engine) = open();
    let first = spawn_add(&db);
    settle().await;
    assert_eq!(
        *engine.begun.lock().expect("begun"),
        1,
        "batch 1 is being written"
    );

    // A watcher that read before batch 1 is not woken while it is written.
    let watcher = db.begin();
    let mut woken = watcher.watch(b"counter");
    watcher.commit().await.expect("watch");

    let second = spawn_add(&db);
    settle().await;
    assert_eq!(
        *engine.begun.lock().expect("begun"),
        1,
        "batch 2 waits for batch 1's write"
    );
    assert!(!first.is_finished() && !second.is_finished());
    assert!(
        (&mut woken).now_or_never().is_none(),
        "nothing is readable yet"
    );
    assert_eq!(db.begin().get(b"counter").await.expect("get"), None);

    engine.gate.add_permits(1);
    let first = first.await.expect("task").expect("first commit");
    settle().await;
    assert!(
        woken.now_or_never().is_some(),
        "batch 1 published fires the watch"
    );
    assert_eq!(
        *engine.begun.lock().expect("begun"),
        2,
        "batch 2 is being written"
    );
    assert!(
        !second.is_finished(),
        "batch 2 is answered only once written"
    );

    engine.gate.add_permits(1);
    let second = second.await.expect("task").expect("second commit");
    assert!(second.version > first.version);
    let value = db.begin().get(b"counter").await.expect("get").expect("set");
    assert_eq!(
        &value[..],
        &2i64.to_le_bytes(),
        "batch 2's add read batch 1's value while it was being written"
    );
}

#[tokio::test]
async fn a_read_of_what_the_batch_in_flight_writes_conflicts() {
    let (db, engine) = open();
    // Read "k" before batch 1, which writes it, is published.
    let reader = db.begin();
    assert_eq!(reader.get(b"k").await.expect("get"), None);
    reader.set(b"other", b"x").expect("set");
    let writer = tokio::spawn({
        let db = db.clone();
        async move {
            let tx = db.begin();
            tx.set(b"k", b"v")?;
            tx.commit().await
        }
    });
    settle().await;
    let reader = tokio::spawn(async move { reader.commit().await });
    settle().await;
    engine.gate.add_permits(2);
    writer.await.expect("task").expect("writer commits");
    let refused = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("answered")
        .expect("task");
    assert!(
        matches!(refused, Err(KvError::NotCommitted)),
        "the reader saw k before batch 1 wrote it: {refused:?}"
    );
}

#[tokio::test]
async fn a_batch_resolved_on_a_failed_write_is_never_written() {
    let (db, engine) = open();
    engine.inner.inject(Fault::FailWithoutApplying);
    let first = spawn_add(&db);
    settle().await;
    // Resolved while batch 1 is written: its add reads batch 1's value.
    let second = spawn_add(&db);
    settle().await;
    engine.gate.add_permits(2);
    let first = first.await.expect("task");
    assert!(
        matches!(first, Err(KvError::CommitUnknownResult { .. })),
        "{first:?}"
    );
    let second = second.await.expect("task");
    assert!(
        matches!(second, Err(KvError::NotCommitted)),
        "built on a failed batch, it is refused, not written: {second:?}"
    );
    assert_eq!(
        *engine.begun.lock().expect("begun"),
        1,
        "batch 2 never started"
    );
    assert_eq!(db.begin().get(b"counter").await.expect("get"), None);
    // The database goes on: a retry commits and reads the stored state.
    engine.gate.add_permits(1);
    add(&db, b"counter").await.expect("retry commits");
    let value = db.begin().get(b"counter").await.expect("get").expect("set");
    assert_eq!(&value[..], &1i64.to_le_bytes());
}

/// A written batch as an observer saw it (its version and keys), or `None`
/// for a write of unknown outcome.
type Seen = Option<(u64, Vec<Vec<u8>>)>;

/// Records what a [`meridian_kv::CommitObserver`] is told.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl meridian_kv::CommitObserver for Recorder {
    fn committed(&self, version: u64, changes: &EngineBatch) {
        let keys = changes
            .values
            .keys()
            .filter(|k| !k.starts_with(b"\xff"))
            .cloned()
            .collect();
        self.seen.lock().expect("seen").push(Some((version, keys)));
    }

    fn outcome_unknown(&self) {
        self.seen.lock().expect("seen").push(None);
    }
}

#[tokio::test]
async fn observers_see_each_written_batch_in_order_before_its_commits_are_answered() {
    let (db, engine) = open();
    let recorder = Arc::new(Recorder::default());
    assert!(db.observe_commits(recorder.clone()));
    let tx = db.begin();
    let mut template = b"k".to_vec();
    template.extend_from_slice(&[0u8; 10]);
    template.extend_from_slice(&1u32.to_le_bytes());
    tx.set_versionstamped_key(&template, b"v").expect("set");
    let first = tokio::spawn(async move { tx.commit().await });
    settle().await;
    assert!(
        recorder.seen.lock().expect("seen").is_empty(),
        "not yet written"
    );
    engine.gate.add_permits(1);
    let info = first.await.expect("join").expect("commit");
    let stamp = info.versionstamp.expect("versionstamp");
    let mut written = b"k".to_vec();
    written.extend_from_slice(&stamp);
    assert_eq!(
        recorder.seen.lock().expect("seen").clone(),
        vec![Some((info.version, vec![written]))],
        "the observer saw the batch, its versionstamp filled in, before the answer"
    );

    engine.inner.inject(Fault::ApplyThenFail);
    let second = spawn_add(&db);
    settle().await;
    engine.gate.add_permits(1);
    assert!(second.await.expect("join").is_err());
    let after = spawn_add(&db);
    settle().await;
    engine.gate.add_permits(1);
    let info = after.await.expect("join").expect("commit");
    let seen = recorder.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[1], None,
        "a write of unknown outcome is reported as such"
    );
    assert_eq!(
        seen[2],
        Some((info.version, vec![b"counter".to_vec()])),
        "later batches are still seen"
    );
}
