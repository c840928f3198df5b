//! ferry-client's integration tests against in-process brokers, one binary (one link) for every
//! module.

mod common;
mod consumer;
mod producer;
mod resilience;
mod secure;
mod wire;
