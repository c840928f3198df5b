//! Test helpers: a go-diskqueue writer (as nsqd writes its queues) that rolls to the next file
//! *after* a write reaches `max`, as go-diskqueue before 1.1 did, and can write raw (corrupt)
//! records. `tests/it/common/nsqd.rs` writes the 1.1+ way (rolling *before* a write would pass the
//! limit); the reader must take both.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::diskqueue::{data_path, meta_path};

/// A go-diskqueue writer: rolls to the next file once `max` bytes are written.
pub(crate) struct Writer {
    pub dir: PathBuf,
    pub name: String,
    pub max: u64,
    pub file: u64,
    pub pos: u64,
}

impl Writer {
    pub(crate) fn new(dir: &Path, name: &str, max: u64) -> Writer {
        Writer {
            dir: dir.to_path_buf(),
            name: name.into(),
            max,
            file: 0,
            pos: 0,
        }
    }

    pub(crate) fn put_raw(&mut self, data: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_path(&self.dir, &self.name, self.file))
            .unwrap();
        f.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
        f.write_all(data).unwrap();
        self.pos += 4 + data.len() as u64;
        if self.pos >= self.max {
            self.file += 1;
            self.pos = 0;
        }
    }

    pub(crate) fn put(&mut self, attempts: u16, body: &[u8]) {
        let mut data = Vec::new();
        data.extend_from_slice(&1_700_000_000_000_000_000i64.to_be_bytes());
        data.extend_from_slice(&attempts.to_be_bytes());
        data.extend_from_slice(b"0123456789abcdef");
        data.extend_from_slice(body);
        self.put_raw(&data);
    }

    pub(crate) fn meta(&self, depth: i64, read: (u64, u64)) {
        std::fs::write(
            meta_path(&self.dir, &self.name),
            format!(
                "{depth}\n{},{}\n{},{}\n",
                read.0, read.1, self.file, self.pos
            ),
        )
        .unwrap();
    }
}
