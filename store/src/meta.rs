//! Topic metadata: paused flags and every channel's snapshot, in `<dir>/meta.dat`.
//!
//! ```text
//!  0          8         12        16                 24
//!  +----------+---------+---------+------------------+------------------------ - -
//!  | FERRYMTA | version | crc32   | payload len      | payload
//!  |          | u32 LE  | u32 LE  | u64 LE           |
//!  +----------+---------+---------+------------------+------------------------ - -
//!  payload  = journal_gen u64 | backlog_start u64 | topic_paused u8 | n_channels u32 | channel*
//!             | retention_ns opt64 | retention_bytes opt64                      (version 3)
//!             (version 1, still read: no journal_gen nor backlog_start, both then 0;
//!              versions 1 and 2: no settings)
//!  channel  = name_len u16 | name (UTF-8) | paused u8 | cursor u64 | n_entries u32 | entry*
//!             | max_age_ns opt64 | max_attempts opt32 | dlt_len u16 | dead-letter topic (UTF-8)
//!                                                                                (version 3)
//!  entry    = seq u64 | attempts u16 | deliver_at_ns i64 | kind u8 (0 in flight, 1 requeued, 2 deferred)
//!  opt64    = 0 u8 | 1 u8 u64      (setting not set: the broker's default applies)
//!  opt32    = 0 u8 | 1 u8 u32
//!  (all integers little-endian; the CRC covers the payload)
//! ```
//!
//! Invariants: the file is replaced atomically (write `meta.dat.tmp`, fsync, rename, fsync
//! the directory), so a reader sees the old or the new version, never a mix. A file that
//! fails any check is reported as [`StoreError::CorruptMeta`], never a panic; the caller then
//! starts its channels fresh. The data it describes may be older or newer than the log;
//! [`crate::ChannelState::restore`] repairs that. `journal_gen` names the journal file
//! (`journal.<gen>`, see `journal.rs`) whose ops continue this snapshot: it is replayed over it
//! on open.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use crate::sys::fsync_dir;
use crate::{ChannelSnapshot, EntryKind, SnapshotEntry, StoreError};

const MAGIC: [u8; 8] = *b"FERRYMTA";
const VERSION: u32 = 3;
const HEADER: usize = 24;
const ENTRY_BYTES: usize = 19;
/// File name of the metadata file inside a topic directory.
pub const META_FILE: &str = "meta.dat";
const META_TMP: &str = "meta.dat.tmp";

/// A topic's persistent metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMeta {
    /// Topic paused (nothing flows to its channels).
    pub paused: bool,
    /// Every channel.
    pub channels: Vec<ChannelMeta>,
    /// The journal generation that continues this snapshot (`journal.<gen>`).
    pub journal_gen: u64,
    /// Where a topic with no channel keeps its backlog from (a first channel starts there;
    /// `/topic/empty` moves it); 0: the log's first message.
    pub backlog_start: u64,
    /// The topic's own settings.
    pub settings: TopicSettings,
}

/// A topic's settings; `None`: the broker's default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSettings {
    /// Keep consumed segments this long (ns; 0: delete them once consumed).
    pub retention_ns: Option<u64>,
    /// Keep at most this many bytes of consumed segments (0: no byte bound).
    pub retention_bytes: Option<u64>,
}

/// A channel's settings; `None`: the broker's default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSettings {
    /// Drop messages older than this (ns since publish) instead of delivering them; 0: never.
    pub max_age_ns: Option<u64>,
    /// Dead-letter a message requeued or timed out after this many deliveries; 0: never.
    pub max_attempts: Option<u32>,
    /// Where dead letters go (`None`: `<topic>.dead`).
    pub dead_letter_topic: Option<String>,
}

/// One channel in [`TopicMeta`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelMeta {
    /// Channel name.
    pub name: String,
    /// Channel paused (no deliveries).
    pub paused: bool,
    /// Cursor and owed messages.
    pub state: ChannelSnapshot,
    /// Its settings.
    pub settings: ChannelSettings,
}

/// Saves `meta` to `<dir>/meta.dat` atomically and durably.
pub fn save_meta(dir: &Path, meta: &TopicMeta) -> Result<(), StoreError> {
    let buf = encode_meta(meta).map_err(|e| StoreError::io("encode metadata", dir, e))?;

    let tmp = dir.join(META_TMP);
    let path = dir.join(META_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io("create metadata", &tmp, e))?;
    f.write_all(&buf)
        .map_err(|e| StoreError::io("write metadata", &tmp, e))?;
    f.sync_all()
        .map_err(|e| StoreError::io("fsync metadata", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename metadata", &path, e))?;
    fsync_dir(dir)?;
    crate::fault::record_synced(&path, buf.len() as u64);
    Ok(())
}

/// `meta` as `meta.dat` holds it (header, CRC, payload): also how a replicated topic's
/// snapshot carries its channels.
pub fn encode_meta(meta: &TopicMeta) -> std::io::Result<Vec<u8>> {
    let payload = encode_payload(meta)?;
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(buf)
}

/// Reads what [`encode_meta`] wrote.
pub fn decode_meta(buf: &[u8]) -> Result<TopicMeta, &'static str> {
    decode(buf)
}

/// Loads `<dir>/meta.dat`; `Ok(None)` if there is none yet.
pub fn load_meta(dir: &Path) -> Result<Option<TopicMeta>, StoreError> {
    let path = dir.join(META_FILE);
    let buf = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read metadata", &path, e)),
    };
    decode(&buf)
        .map(Some)
        .map_err(|reason| StoreError::CorruptMeta { path, reason })
}

fn encode_payload(meta: &TopicMeta) -> std::io::Result<Vec<u8>> {
    let too_big =
        |e: std::num::TryFromIntError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let mut p = Vec::new();
    p.extend_from_slice(&meta.journal_gen.to_le_bytes());
    p.extend_from_slice(&meta.backlog_start.to_le_bytes());
    p.push(u8::from(meta.paused));
    let n = u32::try_from(meta.channels.len()).map_err(too_big)?;
    p.extend_from_slice(&n.to_le_bytes());
    for ch in &meta.channels {
        let name_len = u16::try_from(ch.name.len()).map_err(too_big)?;
        p.extend_from_slice(&name_len.to_le_bytes());
        p.extend_from_slice(ch.name.as_bytes());
        p.push(u8::from(ch.paused));
        p.extend_from_slice(&ch.state.cursor.to_le_bytes());
        let n = u32::try_from(ch.state.entries.len()).map_err(too_big)?;
        p.extend_from_slice(&n.to_le_bytes());
        p.reserve(ch.state.entries.len() * ENTRY_BYTES);
        for e in &ch.state.entries {
            p.extend_from_slice(&e.seq.to_le_bytes());
            p.extend_from_slice(&e.attempts.to_le_bytes());
            p.extend_from_slice(&e.deliver_at_ns.to_le_bytes());
            p.push(match e.kind {
                EntryKind::InFlight => 0,
                EntryKind::Requeued => 1,
                EntryKind::Deferred => 2,
            });
        }
        put_opt64(&mut p, ch.settings.max_age_ns);
        put_opt64(&mut p, ch.settings.max_attempts.map(u64::from));
        let dlt = ch.settings.dead_letter_topic.as_deref().unwrap_or("");
        p.extend_from_slice(&u16::try_from(dlt.len()).map_err(too_big)?.to_le_bytes());
        p.extend_from_slice(dlt.as_bytes());
    }
    put_opt64(&mut p, meta.settings.retention_ns);
    put_opt64(&mut p, meta.settings.retention_bytes);
    Ok(p)
}

/// opt64 (and opt32, whose value is written in 4 bytes).
fn put_opt64(p: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => p.push(0),
        Some(v) => {
            p.push(1);
            p.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn decode(buf: &[u8]) -> Result<TopicMeta, &'static str> {
    let mut r = Input(buf);
    if r.take(8)? != MAGIC {
        return Err("bad magic");
    }
    let version = r.u32()?;
    if !(1..=VERSION).contains(&version) {
        return Err("unsupported version");
    }
    let crc = r.u32()?;
    let len = r.u64()?;
    if len != r.0.len() as u64 {
        return Err("length mismatch (torn write?)");
    }
    if crc32fast::hash(r.0) != crc {
        return Err("checksum mismatch");
    }
    let (journal_gen, backlog_start) = if version >= 2 {
        (r.u64()?, r.u64()?)
    } else {
        (0, 0)
    };
    let paused = r.flag()?;
    let n = r.u32()?;
    let mut channels = Vec::new();
    for _ in 0..n {
        let name_len = r.u16()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?)
            .ok()
            .ok_or("channel name is not UTF-8")?
            .to_owned();
        let ch_paused = r.flag()?;
        let cursor = r.u64()?;
        let count = r.u32()? as usize;
        if count.saturating_mul(ENTRY_BYTES) > r.0.len() {
            return Err("entry count exceeds file");
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let seq = r.u64()?;
            let attempts = r.u16()?;
            let deliver_at_ns = r.u64()? as i64;
            let kind = match r.u8()? {
                0 => EntryKind::InFlight,
                1 => EntryKind::Requeued,
                2 => EntryKind::Deferred,
                _ => return Err("unknown entry kind"),
            };
            entries.push(SnapshotEntry {
                seq,
                attempts,
                deliver_at_ns,
                kind,
            });
        }
        let settings = if version >= 3 {
            ChannelSettings {
                max_age_ns: r.opt64()?,
                max_attempts: r
                    .opt64()?
                    .map(|v| u32::try_from(v).map_err(|_overflow| "max_attempts out of range"))
                    .transpose()?,
                dead_letter_topic: {
                    let len = r.u16()? as usize;
                    let name = std::str::from_utf8(r.take(len)?)
                        .ok()
                        .ok_or("dead-letter topic is not UTF-8")?;
                    (!name.is_empty()).then(|| name.to_owned())
                },
            }
        } else {
            ChannelSettings::default()
        };
        channels.push(ChannelMeta {
            name,
            paused: ch_paused,
            state: ChannelSnapshot { cursor, entries },
            settings,
        });
    }
    let settings = if version >= 3 {
        TopicSettings {
            retention_ns: r.opt64()?,
            retention_bytes: r.opt64()?,
        }
    } else {
        TopicSettings::default()
    };
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(TopicMeta {
        paused,
        channels,
        journal_gen,
        backlog_start,
        settings,
    })
}

/// A bounds-checked little-endian reader.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }
    fn flag(&mut self) -> Result<bool, &'static str> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("bad flag"),
        }
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        self.array().map(u64::from_le_bytes)
    }
    fn opt64(&mut self) -> Result<Option<u64>, &'static str> {
        match self.flag()? {
            false => Ok(None),
            true => self.u64().map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TopicMeta {
        TopicMeta {
            paused: true,
            channels: vec![ChannelMeta {
                name: "c".into(),
                paused: false,
                state: ChannelSnapshot {
                    cursor: 10,
                    entries: vec![SnapshotEntry {
                        seq: 4,
                        attempts: 2,
                        deliver_at_ns: 77,
                        kind: EntryKind::Deferred,
                    }],
                },
                settings: ChannelSettings::default(),
            }],
            journal_gen: 5,
            backlog_start: 3,
            settings: TopicSettings::default(),
        }
    }

    #[test]
    fn version_3_round_trips_with_settings() {
        let dir = tempfile::tempdir().unwrap();
        save_meta(dir.path(), &sample()).unwrap();
        assert_eq!(load_meta(dir.path()).unwrap(), Some(sample()));
        let mut meta = sample();
        meta.settings = TopicSettings {
            retention_ns: Some(3_600_000_000_000),
            retention_bytes: Some(0),
        };
        meta.channels[0].settings = ChannelSettings {
            max_age_ns: Some(1),
            max_attempts: Some(5),
            dead_letter_topic: Some("t.dead".into()),
        };
        save_meta(dir.path(), &meta).unwrap();
        assert_eq!(load_meta(dir.path()).unwrap(), Some(meta));
    }

    #[test]
    fn version_1_still_loads_as_generation_0() {
        // A version-1 file: the version-3 payload without its first 16 bytes (journal_gen,
        // backlog_start) and without the settings (4 bytes for the channel, which ends the
        // channel list, then 2 for the topic: all unset).
        let v3 = encode_payload(&sample()).unwrap();
        let payload = &v3[16..v3.len() - 6];
        let mut buf = Vec::new();
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&1u32.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        buf.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        buf.extend_from_slice(payload);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(META_FILE), &buf).unwrap();
        let loaded = load_meta(dir.path()).unwrap().unwrap();
        assert_eq!(
            loaded,
            TopicMeta {
                journal_gen: 0,
                backlog_start: 0,
                ..sample()
            }
        );
    }
}
