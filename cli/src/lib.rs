//! `ferry`, Ferry's operator tool, as a library: the binary (`src/main.rs`) only parses the
//! command line and calls into these modules, and tests call the same functions.
//!
//! # Layout
//!
//! - [`args`]: argument parsers shared by every subcommand (Go-style durations, defaults);
//! - [`bench`](mod@bench): `ferry bench writer|reader`, a load generator for any NSQ-protocol broker;
//! - [`admin`]: `ferry pause|unpause|empty|delete`, applied on every broker holding a topic;
//! - [`create`]: `ferry create`, a topic (replicated with `--replicas N`) and a channel;
//! - [`rewind`], [`peek`], [`config`](mod@config), [`redrive`]: replay, inspection, retention
//!   and dead-letter settings of a topic's channels, on every broker holding the topic;
//! - [`api`]: one request to each of those brokers, answers and errors as people read them;
//! - [`stat`]: `ferry stat`, a live table of a topic's or channel's numbers across brokers;
//! - [`nodes`]: finding those brokers (lookupd `/lookup`, or given addresses);
//! - [`tail`]: `ferry tail`, print a topic's messages (a ferry-client consumer), taking
//!   nsq_tail's flags too ([`consumer_opt`]: go-nsq options passed through);
//! - [`publish`]: `ferry pub`, publish arguments or stdin lines (a ferry-client producer);
//! - [`dev`]: `ferry dev`, lookupd + brokerd (or three, `--replicas 3`) in one process for
//!   development;
//! - [`import`]: `ferry import-nsqd`, a dry run of brokerd's import of nsqd 1.x data;
//! - [`feed`]: `ferry to-file|to-http|to-broker`, nsq_to_file, nsq_to_http and nsq_to_nsq.
//!
//! Every command speaks NSQ's protocol V2 through `ferry-proto`, so it works against Ferry's
//! `brokerd` and against a real `nsqd` alike.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod args;
pub mod bench;
pub mod config;
pub mod consumer_opt;
pub mod create;
pub mod dev;
pub mod feed;
pub mod import;
pub mod nodes;
pub mod peek;
pub mod publish;
pub mod redrive;
pub mod rewind;
pub mod security;
pub mod stat;
pub mod tail;
