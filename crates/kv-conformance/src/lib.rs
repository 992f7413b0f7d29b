//! The conformance suite every `meridian-kv` engine must pass.
//!
//! The tests are generic async functions over a [`Backend`]; the
//! [`conformance_suite!`] macro expands one `#[tokio::test]` per function for a
//! backend, so each engine crate runs the same battery (the shape of
//! hickory-dns's `basic_battery!`). A backend that cannot run on a machine
//! (FoundationDB without a cluster) prints that it skipped, never passes silently.
//!
//! Used only as a dev-dependency.

// A test suite: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_kv::engine::Engine;
use meridian_kv::{
    Database, DatabaseOptions, KeyRange, KvError, MaybeCommitted, RangeOption, prefix_range, tuple,
};
use meridian_seams::{Rng, SystemClock};

/// A place a database lives: opening it again after the database closed
/// sees everything committed before.
pub trait Backend: Send + Sync {
    /// Opens a database over this backend's storage.
    fn database(&self) -> Database;
}

/// A database over `engine` (the native transaction layer), with a real
/// clock and a fixed seed: what an engine backend's [`Backend::database`]
/// returns.
pub fn over_engine(engine: Arc<dyn Engine>) -> Database {
    Database::open(
        engine,
        SystemClock::shared(),
        Rng::seeded(42),
        DatabaseOptions::default(),
    )
    .expect("open database")
}

/// Opens a database over `backend`.
pub fn open(backend: &dyn Backend) -> Database {
    backend.database()
}

/// Every case, in order: for a backend whose storage is shared (a
/// FoundationDB cluster), which runs them one at a time, calling `reset`
/// before each.
pub async fn run_all(backend: &dyn Backend, reset: impl AsyncFn()) {
    reset().await;
    point_operations(backend).await;
    reset().await;
    range_reads(backend).await;
    reset().await;
    serializable_conflicts(backend).await;
    reset().await;
    versionstamps_increase(backend).await;
    reset().await;
    watches_fire_on_change(backend).await;
    reset().await;
    atomic_add_under_concurrency(backend).await;
    reset().await;
    byte_max_moves_forward_only(backend).await;
    reset().await;
    limits_are_enforced(backend).await;
    reset().await;
    durable_across_reopen(backend).await;
    reset().await;
    retry_loop_semantics(backend).await;
}

async fn set(db: &Database, key: &[u8], value: &[u8]) {
    db.run(|tx, _| async move { tx.set(key, value) })
        .await
        .expect("set");
}

async fn get(db: &Database, key: &[u8]) -> Option<Vec<u8>> {
    db.run(|tx, _| async move { Ok::<_, KvError>(tx.get(key).await?.map(|v| v.to_vec())) })
        .await
        .expect("get")
}

fn keys(pairs: &[meridian_kv::KeyValue]) -> Vec<Vec<u8>> {
    pairs.iter().map(|kv| kv.key.to_vec()).collect()
}

/// set, get, clear and read-your-writes inside one transaction.
pub async fn point_operations(backend: &dyn Backend) {
    let db = open(backend);
    set(&db, b"a", b"1").await;
    assert_eq!(get(&db, b"a").await, Some(b"1".to_vec()));
    let tx = db.begin();
    tx.set(b"a", b"2").unwrap();
    assert_eq!(tx.get(b"a").await.unwrap().as_deref(), Some(&b"2"[..]));
    tx.clear(b"a").unwrap();
    assert_eq!(tx.get(b"a").await.unwrap(), None);
    // Not yet committed: another transaction still sees the old value.
    assert_eq!(get(&db, b"a").await, Some(b"1".to_vec()));
    tx.commit().await.unwrap();
    assert_eq!(get(&db, b"a").await, None);
}

/// Range reads: forward, reverse, limits, merged with uncommitted writes.
pub async fn range_reads(backend: &dyn Backend) {
    let db = open(backend);
    for i in 0..10u8 {
        set(&db, &[b'r', i], &[i]).await;
    }
    set(&db, b"s", b"outside").await;
    let range = prefix_range(b"r");
    let tx = db.begin();
    let all = tx
        .get_range(&RangeOption::new(range.clone()))
        .await
        .unwrap();
    assert_eq!(all.len(), 10);
    let first3 = tx
        .get_range(&RangeOption::new(range.clone()).limit(3))
        .await
        .unwrap();
    assert_eq!(
        keys(&first3),
        vec![vec![b'r', 0], vec![b'r', 1], vec![b'r', 2]]
    );
    let last2 = tx
        .get_range(&RangeOption::new(range.clone()).limit(2).reverse(true))
        .await
        .unwrap();
    assert_eq!(keys(&last2), vec![vec![b'r', 9], vec![b'r', 8]]);
    // Uncommitted writes appear in order; cleared keys disappear.
    tx.set(&[b'r', 5, 0], b"new").unwrap();
    tx.clear(&[b'r', 0]).unwrap();
    tx.clear_range(&KeyRange::new(vec![b'r', 7], vec![b'r', 9]))
        .unwrap();
    let merged = tx
        .get_range(&RangeOption::new(range.clone()))
        .await
        .unwrap();
    assert_eq!(
        keys(&merged),
        vec![
            vec![b'r', 1],
            vec![b'r', 2],
            vec![b'r', 3],
            vec![b'r', 4],
            vec![b'r', 5],
            vec![b'r', 5, 0],
            vec![b'r', 6],
            vec![b'r', 9]
        ]
    );
    let merged_rev = tx
        .get_range(&RangeOption::new(range.clone()).reverse(true).limit(3))
        .await
        .unwrap();
    assert_eq!(
        keys(&merged_rev),
        vec![vec![b'r', 9], vec![b'r', 6], vec![b'r', 5, 0]]
    );
    tx.commit().await.unwrap();
    let after = db
        .begin()
        .get_range(&RangeOption::new(range))
        .await
        .unwrap();
    assert_eq!(after.len(), 8);
    assert_eq!(get(&db, b"s").await, Some(b"outside".to_vec()));
    let inverted = RangeOption::new(KeyRange::new(b"b".to_vec(), b"a".to_vec()));
    assert!(matches!(
        db.begin().get_range(&inverted).await,
        Err(KvError::InvertedRange)
    ));
}

/// A transaction whose read was overwritten by a later commit fails with
/// `not_committed`; snapshot reads do not conflict; the retry loop makes
/// read-modify-write correct under concurrency.
pub async fn serializable_conflicts(backend: &dyn Backend) {
    let db = open(backend);
    set(&db, b"k", b"0").await;
    let reader = db.begin();
    let _ = reader.get(b"k").await.unwrap();
    reader.set(b"other", b"x").unwrap();
    set(&db, b"k", b"1").await;
    assert!(matches!(reader.commit().await, Err(KvError::NotCommitted)));

    let snapshot_reader = db.begin();
    let _ = snapshot_reader.get_snapshot(b"k").await.unwrap();
    snapshot_reader.set(b"other", b"y").unwrap();
    set(&db, b"k", b"2").await;
    snapshot_reader
        .commit()
        .await
        .expect("snapshot reads never conflict");

    // A reader sees its snapshot even after a later commit.
    let tx = db.begin();
    set(&db, b"k", b"3").await;
    assert_eq!(tx.get(b"k").await.unwrap().as_deref(), Some(&b"2"[..]));

    // 40 concurrent read-modify-write increments through the retry loop.
    set(&db, b"counter", &0u64.to_be_bytes()).await;
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                db.run(|tx, _| async move {
                    let raw = tx.get(b"counter").await?.expect("counter");
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&raw);
                    tx.set(b"counter", &(u64::from_be_bytes(n) + 1).to_be_bytes())
                })
                .await
                .expect("increment")
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        get(&db, b"counter").await,
        Some(40u64.to_be_bytes().to_vec())
    );
}

/// Versionstamps grow strictly, within a batch and across batches, and fill
/// versionstamped keys and values.
pub async fn versionstamps_increase(backend: &dyn Backend) {
    let db = open(backend);
    let subspace = tuple::Subspace::from_bytes(b"vs".to_vec());
    let tasks: Vec<_> = (0..50u32)
        .map(|i| {
            let db = db.clone();
            let subspace = subspace.clone();
            tokio::spawn(async move {
                let template = subspace.pack_with_versionstamp(&tuple::Versionstamp::incomplete(0));
                let (_, info) = db
                    .run_with_info(|tx, _| {
                        let template = template.clone();
                        async move { tx.set_versionstamped_key(&template, &i.to_be_bytes()) }
                    })
                    .await
                    .expect("versionstamped write");
                info.versionstamp.expect("a write has a versionstamp")
            })
        })
        .collect();
    let mut stamps = Vec::new();
    for task in tasks {
        stamps.push(task.await.unwrap());
    }
    let mut sorted = stamps.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 50, "versionstamps are unique");
    let stored = db
        .begin()
        .get_range(&RangeOption::new(prefix_range(subspace.bytes())))
        .await
        .unwrap();
    assert_eq!(stored.len(), 50);
    let decoded: Vec<[u8; 10]> = stored
        .iter()
        .map(|kv| {
            let (stamp,): (tuple::Versionstamp,) = subspace.unpack(&kv.key).unwrap();
            let mut raw = [0u8; 10];
            raw.copy_from_slice(stamp.transaction_version());
            raw
        })
        .collect();
    assert_eq!(
        decoded, sorted,
        "keys carry the commit versionstamps, in order"
    );
    // A versionstamped value, and a later commit's stamp is larger.
    let mut value_template = vec![0u8; 10];
    value_template.extend_from_slice(&0u32.to_le_bytes());
    let (_, info) = db
        .run_with_info(|tx, _| {
            let value_template = value_template.clone();
            async move { tx.set_versionstamped_value(b"vsvalue", &value_template) }
        })
        .await
        .unwrap();
    let stamp = info.versionstamp.unwrap();
    assert!(stamp > *sorted.last().unwrap());
    assert_eq!(get(&db, b"vsvalue").await, Some(stamp.to_vec()));
    assert!(matches!(
        db.begin().set_versionstamped_key(b"short", b""),
        Err(KvError::InvalidVersionstampOffset { .. })
    ));
}

/// A watch fires when its key changes, and not before.
pub async fn watches_fire_on_change(backend: &dyn Backend) {
    let db = open(backend);
    set(&db, b"head", b"0").await;
    let tx = db.begin();
    let _ = tx.get(b"head").await.unwrap();
    let mut watch = tx.watch(b"head");
    tx.commit().await.unwrap();
    set(&db, b"unrelated", b"x").await;
    let early = tokio::time::timeout(Duration::from_millis(50), &mut watch).await;
    assert!(early.is_err(), "a write elsewhere must not fire the watch");
    set(&db, b"head", b"1").await;
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch fired")
        .expect("watch ok");

    // A change between the watcher's read and its commit fires at once.
    let tx = db.begin();
    let _ = tx.get_snapshot(b"head").await.unwrap();
    let watch = tx.watch(b"head");
    set(&db, b"head", b"2").await;
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("missed change fires immediately")
        .expect("watch ok");
}

/// Concurrent atomic adds never conflict and never lose an increment.
pub async fn atomic_add_under_concurrency(backend: &dyn Backend) {
    let db = open(backend);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let tx = db.begin();
                    tx.atomic_add(b"adds", 1).unwrap();
                    tx.commit().await.expect("adds never conflict");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(get(&db, b"adds").await, Some(500i64.to_le_bytes().to_vec()));
    let tx = db.begin();
    tx.atomic_add(b"adds", -500).unwrap();
    assert_eq!(
        tx.get(b"adds").await.unwrap().as_deref(),
        Some(&0i64.to_le_bytes()[..])
    );
}

/// Byte-max keeps the greatest value, never conflicts, and reads back.
pub async fn byte_max_moves_forward_only(backend: &dyn Backend) {
    let db = open(backend);
    let tasks: Vec<_> = (0..20u8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let tx = db.begin();
                tx.atomic_byte_max(b"cursor", &[0, i]).unwrap();
                tx.commit().await.expect("byte-max never conflicts");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(get(&db, b"cursor").await, Some(vec![0, 19]));
    let tx = db.begin();
    tx.atomic_byte_max(b"cursor", &[0, 3]).unwrap();
    assert_eq!(
        tx.get(b"cursor").await.unwrap().as_deref(),
        Some(&[0u8, 19][..])
    );
    tx.atomic_byte_max(b"cursor", &[1]).unwrap();
    assert_eq!(
        tx.get(b"cursor").await.unwrap().as_deref(),
        Some(&[1u8][..])
    );
    tx.commit().await.unwrap();
    assert_eq!(get(&db, b"cursor").await, Some(vec![1]));
}

/// FoundationDB's limits are refused with typed errors.
pub async fn limits_are_enforced(backend: &dyn Backend) {
    let db = open(backend);
    let tx = db.begin();
    assert!(matches!(
        tx.set(&vec![1u8; 10_001], b""),
        Err(KvError::KeyTooLarge { size: 10_001 })
    ));
    assert!(matches!(
        tx.set(b"k", &vec![0u8; 100_001]),
        Err(KvError::ValueTooLarge { size: 100_001 })
    ));
    assert!(matches!(
        tx.set(b"\xffsystem", b""),
        Err(KvError::KeyOutsideLegalRange)
    ));
    let big = vec![0u8; 99_000];
    let mut outcome = Ok(());
    for i in 0..200u32 {
        outcome = tx.set(&i.to_be_bytes(), &big);
        if outcome.is_err() {
            break;
        }
    }
    assert!(matches!(outcome, Err(KvError::TransactionTooLarge { .. })));
    set(&db, &vec![1u8; 10_000], &vec![2u8; 100_000]).await;
}

/// Everything committed survives closing and reopening; versions keep growing.
pub async fn durable_across_reopen(backend: &dyn Backend) {
    let db = open(backend);
    set(&db, b"durable", b"yes").await;
    let (_, before) = db
        .run_with_info(|tx, _| async move { tx.set(b"second", b"1") })
        .await
        .unwrap();
    db.close().await;
    let db = open(backend);
    assert_eq!(get(&db, b"durable").await, Some(b"yes".to_vec()));
    let (_, after) = db
        .run_with_info(|tx, _| async move { tx.set(b"third", b"1") })
        .await
        .unwrap();
    assert!(
        after.versionstamp > before.versionstamp,
        "versions continue after reopen"
    );
    db.close().await;
}

/// The retry loop gives domain errors back untouched and retries conflicts,
/// telling the closure nothing committed.
pub async fn retry_loop_semantics(backend: &dyn Backend) {
    let db = open(backend);
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let result: Result<(), KvError> = db
        .run(|tx, maybe: MaybeCommitted| {
            let attempts = &attempts;
            let db = db.clone();
            async move {
                assert!(!maybe.0);
                let n = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tx.get(b"contended").await?;
                if n < 3 {
                    // Make this attempt conflict.
                    set(&db, b"contended", &n.to_be_bytes()).await;
                }
                tx.set(b"done", b"1")
            }
        })
        .await;
    result.unwrap();
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 4);
    let refused: Result<(), KvError> = db.run(|_, _| async { Err(KvError::InvertedRange) }).await;
    assert!(matches!(refused, Err(KvError::InvertedRange)));
}

/// Expands one test per conformance function for a backend.
///
/// `$backend` is an expression producing a value implementing [`Backend`];
/// it is evaluated once per test, so each test gets fresh storage.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let backend = $backend;
                        $crate::$name(&backend).await;
                    }
                };
            }
            case!(point_operations);
            case!(range_reads);
            case!(serializable_conflicts);
            case!(versionstamps_increase);
            case!(watches_fire_on_change);
            case!(atomic_add_under_concurrency);
            case!(byte_max_moves_forward_only);
            case!(limits_are_enforced);
            case!(durable_across_reopen);
            case!(retry_loop_semantics);
        }
    };
}
