//! The conformance suite against FoundationDB.
//!
//! Runs only where a cluster exists: built with `--features fdb` and with
//! `FDB_CLUSTER_FILE` naming a **test** cluster's file (the suite clears the
//! whole user keyspace before each case). Anywhere else it prints that it
//! skipped FoundationDB — never a silent pass.

// A test: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "fdb")]
mod cluster {
    use meridian_kv::{Database, KeyRange, KvError};
    use meridian_kv_conformance::Backend;

    pub struct Fdb(pub String);

    impl Backend for Fdb {
        fn database(&self) -> Database {
            meridian_kv_fdb::open(
                Some(&self.0),
                "conformance",
                meridian_seams::SystemClock::shared(),
            )
            .expect("open the FoundationDB cluster")
        }
    }

    /// Empties the user keyspace, so each case starts from nothing.
    pub async fn clear_everything(db: &Database) {
        db.run(|tx, _| async move {
            tx.clear_range(&KeyRange::new(Vec::new(), vec![0xff]))?;
            Ok::<_, KvError>(())
        })
        .await
        .expect("clear the test cluster");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foundationdb_passes_the_conformance_suite() {
    #[cfg(not(feature = "fdb"))]
    {
        println!(
            "SKIPPED FoundationDB conformance: built without the `fdb` feature \
             (run `cargo test -p meridian-kv-fdb --features fdb --test conformance` with FDB_CLUSTER_FILE set)"
        );
    }
    #[cfg(feature = "fdb")]
    {
        let Some(cluster_file) = std::env::var_os("FDB_CLUSTER_FILE") else {
            println!("SKIPPED FoundationDB conformance: FDB_CLUSTER_FILE is not set");
            return;
        };
        let backend = cluster::Fdb(cluster_file.to_string_lossy().into_owned());
        let db = meridian_kv_conformance::open(&backend);
        meridian_kv_conformance::run_all(&backend, async || {
            cluster::clear_everything(&db).await;
        })
        .await;
        println!(
            "FoundationDB conformance: every case passed against {}",
            backend.0
        );
    }
}
