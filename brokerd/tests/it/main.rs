//! ferry-brokerd's integration tests, one binary (one link) for every module. `tests/creation.rs`
//! is its own binary: it keeps every core busy on purpose, which would starve the tests running
//! beside it here.

mod auth;
mod cluster;
mod common;
mod conn_limit;
mod disk_full;
mod edge_cases;
mod grpc;
mod grpc_python;
mod http;
mod import_nsqd;
mod journal;
mod many_topics;
mod metrics;
mod nsq_compat;
mod pipeline;
mod power_loss;
mod prometheus;
mod protocol;
mod pynsq;
mod replication;
mod restart;
mod secure;
