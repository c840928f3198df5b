//! ferry-admin-ui's integration tests, one binary (one link) for every module.

mod alerts;
mod binary;
mod browser;
mod common;
mod http;
mod https;
mod replay;
mod replication;
