//! ferry-store's integration tests, one binary (one link) for every module. `tests/rss.rs` is its
//! own binary: it measures the process's resident memory.

mod common;
mod growth;
mod journal;
mod log;
mod model;
mod needs_sync;
mod queue_features;
mod recovery;
