//! Installing a replicated topic's snapshot: the snapshot is a manifest (the next sequence and
//! the channels), so a replica that installs one first gets the messages it lacks from the
//! group's members, `GET /raft/records?topic=T&from=S&to=E`, in chunks, then takes the
//! channels' state.
//!
//! A chunk is `[first u64][next u64]` (the serving log's first and next sequence) followed by
//! records `[seq u64][timestamp i64][deliver_at i64][len u32][body]`, all little-endian, in
//! sequence order from the first one at or after `from`, below `to`, up to about
//! [`CHUNK_BYTES`]. Sequences that are gone everywhere (retention, consumed segments) are a gap
//! in the installing replica's log too ([`TopicLog::skip_to`]), so message IDs still agree.

use std::io;
use std::sync::Weak;
use std::time::Duration;

use ferry_replica::Install;
use ferry_store::{NewRecord, StoreError, TopicLog};
use tracing::{info, warn};

use crate::topic::Topic;

/// About the most record bytes one `/raft/records` answer holds.
pub const CHUNK_BYTES: usize = 8 * 1024 * 1024;
const HEADER: usize = 16;
const RECORD_HEADER: usize = 28;
/// Pause before asking the members again when none could serve.
const RETRY: Duration = Duration::from_millis(500);

/// The records of `log` from `from` (the first at or after it) below `to`, as a chunk.
pub fn encode_records(log: &TopicLog, from: u64, to: u64) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(HEADER + 4096);
    out.extend_from_slice(&log.first_seq().to_le_bytes());
    out.extend_from_slice(&log.next_seq().to_le_bytes());
    let mut reader = log.reader(from);
    while out.len() < CHUNK_BYTES {
        let Some(r) = reader.next(log)? else { break };
        if r.seq >= to {
            break;
        }
        out.extend_from_slice(&r.seq.to_le_bytes());
        out.extend_from_slice(&r.timestamp_ns.to_le_bytes());
        out.extend_from_slice(&r.deliver_at_ns.to_le_bytes());
        out.extend_from_slice(&(r.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.body);
    }
    Ok(out)
}

/// One record of a chunk.
#[derive(Debug)]
struct ChunkRecord<'a> {
    seq: u64,
    record: NewRecord<'a>,
}

/// A decoded chunk: the serving log's first and next sequence, and its records.
#[derive(Debug)]
struct Chunk<'a> {
    first: u64,
    next: u64,
    records: Vec<ChunkRecord<'a>>,
}

fn decode_records(bytes: &[u8]) -> io::Result<Chunk<'_>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a damaged records chunk");
    let u64_at = |b: &[u8], at: usize| -> io::Result<u64> {
        let word = b.get(at..at + 8).ok_or_else(bad)?;
        Ok(u64::from_le_bytes(word.try_into().expect("8 bytes")))
    };
    let (first, next) = (u64_at(bytes, 0)?, u64_at(bytes, 8)?);
    let mut records = Vec::new();
    let mut at = HEADER;
    while at < bytes.len() {
        let seq = u64_at(bytes, at)?;
        let timestamp_ns = u64_at(bytes, at + 8)? as i64;
        let deliver_at_ns = u64_at(bytes, at + 16)? as i64;
        let len = bytes.get(at + 24..at + RECORD_HEADER).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let body_at = at + RECORD_HEADER;
        let body = bytes.get(body_at..body_at + len).ok_or_else(bad)?;
        if records
            .last()
            .is_some_and(|r: &ChunkRecord<'_>| r.seq >= seq)
        {
            return Err(bad());
        }
        records.push(ChunkRecord {
            seq,
            record: NewRecord {
                timestamp_ns,
                deliver_at_ns,
                body,
            },
        });
        at = body_at + len;
    }
    Ok(Chunk {
        first,
        next,
        records,
    })
}

/// Appends what `chunk` holds beyond `topic`'s log, up to `target` (exclusive), skipping the
/// sequences the serving log no longer has; whether the log moved forward.
fn apply_chunk(topic: &Topic, chunk: &Chunk<'_>, target: u64) -> io::Result<bool> {
    let log = topic.log();
    let before = log.next_seq();
    let mut batch: Vec<NewRecord<'_>> = Vec::new();
    let flush = |batch: &mut Vec<NewRecord<'_>>| -> io::Result<()> {
        if !batch.is_empty() {
            topic.append_records(batch).map_err(io::Error::other)?;
            batch.clear();
        }
        Ok(())
    };
    for r in chunk.records.iter().filter(|r| r.seq < target) {
        let expected = log.next_seq() + batch.len() as u64;
        if r.seq < expected {
            continue; // held already
        }
        if r.seq > expected {
            flush(&mut batch)?;
            log.skip_to(r.seq).map_err(io::Error::other)?;
        }
        batch.push(r.record);
    }
    flush(&mut batch)?;
    if chunk.records.is_empty() && chunk.first > log.next_seq() {
        // Everything from here up to its first record is gone on that member too.
        log.skip_to(chunk.first.min(target))
            .map_err(io::Error::other)?;
    }
    let moved = log.next_seq() > before;
    if !moved {
        tracing::debug!(
            topic = topic.name(),
            member_next = chunk.next,
            target,
            "snapshot: the member asked is not as far as the snapshot"
        );
    }
    Ok(moved)
}

/// Installs a snapshot on `topic`'s replica (see the module docs); `me` is this broker's
/// address in the group, skipped among the sources. Asks the members in turn until the log
/// reaches the snapshot's next sequence (a member that is down or behind is passed over),
/// then takes the channels' state; fails only if the topic goes away meanwhile.
pub async fn install(
    topic: Weak<Topic>,
    client: reqwest::Client,
    me: String,
    install: Install,
) -> io::Result<()> {
    let gone = || io::Error::other("the topic is gone");
    let sources: Vec<&String> = install.sources.iter().filter(|s| **s != me).collect();
    loop {
        let t = topic.upgrade().ok_or_else(gone)?;
        let (name, have, cancel) = (t.name().to_owned(), t.log().next_seq(), t.cancel.clone());
        drop(t);
        if have >= install.next_seq {
            break;
        }
        let mut moved = false;
        for source in &sources {
            match fetch(&client, source, &name, have, install.next_seq).await {
                Ok(bytes) => {
                    let (weak, target) = (topic.clone(), install.next_seq);
                    moved = tokio::task::spawn_blocking(move || {
                        let t = weak.upgrade().ok_or_else(gone)?;
                        apply_chunk(&t, &decode_records(&bytes)?, target)
                    })
                    .await
                    .map_err(io::Error::other)??;
                    if moved {
                        break;
                    }
                }
                Err(e) => {
                    warn!(topic = name, source, error = %e, "snapshot: member cannot serve its messages")
                }
            }
        }
        if !moved {
            tokio::select! {
                _ = cancel.cancelled() => return Err(io::Error::other("the broker is stopping")),
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
    let (weak, next_seq) = (topic.clone(), install.next_seq);
    tokio::task::spawn_blocking(move || {
        let t = weak.upgrade().ok_or_else(gone)?;
        t.install_manifest(&install.data, next_seq)?;
        t.log().sync().map_err(io::Error::other)?;
        info!(
            topic = t.name(),
            next_seq, "installed a snapshot of the group"
        );
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

async fn fetch(
    client: &reqwest::Client,
    source: &str,
    topic: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<bytes::Bytes> {
    let url = reqwest::Url::parse_with_params(
        &format!("http://{source}/raft/records"),
        [
            ("topic", topic),
            ("from", &from.to_string()),
            ("to", &to.to_string()),
        ],
    )?;
    let reply = client.get(url).send().await?;
    let status = reply.status();
    if !status.is_success() {
        anyhow::bail!("{status} {}", reply.text().await.unwrap_or_default());
    }
    Ok(reply.bytes().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_reads_back_and_stops_at_its_bounds() {
        let log = TopicLog::in_memory_from(100, 10);
        for i in 0..5u8 {
            log.append(NewRecord {
                timestamp_ns: i64::from(i),
                deliver_at_ns: 7,
                body: &[i; 3],
            })
            .unwrap();
        }
        let bytes = encode_records(&log, 11, 14).unwrap();
        let chunk = decode_records(&bytes).unwrap();
        assert_eq!((chunk.first, chunk.next), (10, 15));
        let seqs: Vec<u64> = chunk.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [11, 12, 13]);
        assert_eq!(chunk.records[1].record.body, &[2u8; 3]);
        assert_eq!(chunk.records[1].record.deliver_at_ns, 7);
        assert!(decode_records(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_records(&bytes[..8]).is_err());
    }
}
