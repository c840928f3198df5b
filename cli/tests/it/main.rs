//! ferry-cli's integration tests (the `ferry` binary as a process, brokers in process), one
//! binary (one link) for every module.

mod admin;
mod bench;
mod bench_fake_broker;
mod channel_tools;
mod common;
mod feeds;
mod import_nsqd;
mod replicated;
mod tail_pub_dev;
