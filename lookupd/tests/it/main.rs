//! ferry-lookupd's integration tests, one binary (one link) for every module.

mod binary;
mod common;
mod http;
mod protocol;
