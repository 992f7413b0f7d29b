//! What the fjall engine's integration tests share.

use std::sync::Arc;

use meridian_kv::{Database, DatabaseOptions};
use meridian_kv_fjall::FjallEngine;
use meridian_seams::{Rng, SystemClock};

/// A database over a fjall engine in `dir`, opened (or recovered) there.
pub fn open(dir: &std::path::Path) -> Database {
    Database::open(
        Arc::new(FjallEngine::open(dir).expect("open fjall")),
        SystemClock::shared(),
        Rng::seeded(1),
        DatabaseOptions::default(),
    )
    .expect("open db")
}
