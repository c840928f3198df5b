//! ferry-proto's integration tests (property tests of the codecs), one binary (one link) for every
//! module.

mod common;
mod robustness;
mod roundtrip;
