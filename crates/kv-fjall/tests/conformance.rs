//! The conformance suite against the fjall engine.

use std::sync::Arc;

use meridian_kv::engine::Engine;
use meridian_kv_conformance::Backend;
use meridian_kv_fjall::FjallEngine;

struct Fjall(tempfile::TempDir);

impl Fjall {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }
}

impl Backend for Fjall {
    fn database(&self) -> meridian_kv::Database {
        let engine: Arc<dyn Engine> =
            Arc::new(FjallEngine::open(self.0.path()).expect("open fjall"));
        meridian_kv_conformance::over_engine(engine)
    }
}

meridian_kv_conformance::conformance_suite!(crate::Fjall::new());
