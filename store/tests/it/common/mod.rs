//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use ferry_store::{LogOptions, NewRecord, TopicLog};

/// Options with small segments so tests rotate often.
pub fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions {
        max_bytes_per_file: segment_bytes,
        initial_seq: 1000,
        ..LogOptions::default()
    }
}

/// A record with `body`, published "now".
pub fn rec(body: &[u8]) -> NewRecord<'_> {
    NewRecord {
        timestamp_ns: 1,
        deliver_at_ns: 0,
        body,
    }
}

/// A deterministic body for message `i`.
pub fn body(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The segment files of a log directory, in order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Offsets of the records in a segment file, following the length chain until `len == 0`.
pub fn record_offsets(file: &Path) -> Vec<u64> {
    let data = std::fs::read(file).unwrap();
    let mut off = 32usize;
    let mut out = Vec::new();
    while off + 4 <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push(off as u64);
        off += (8 + len).div_ceil(8) * 8;
    }
    out
}

/// Overwrites bytes of a file at `off`.
pub fn patch(file: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

/// Every record of the log via a reader, as `(seq, body)`.
pub fn read_all(log: &TopicLog) -> Vec<(u64, Vec<u8>)> {
    let mut r = log.reader(0);
    let mut out = Vec::new();
    while let Some(rec) = r.next(log).unwrap() {
        out.push((rec.seq, rec.body.to_vec()));
    }
    out
}

/// A tmpfs mounted for a test; unmounted when dropped (also when the test fails).
pub struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `2m`) on `dir`, or says why
/// `test` is skipped and returns `None` (mounting needs privileges).
pub fn mount_tmpfs(dir: &Path, size: &str, test: &str) -> Option<Tmpfs> {
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::piped())
        .output();
    match mounted {
        Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
        Ok(o) => {
            eprintln!(
                "skipping {test}: cannot mount tmpfs ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("skipping {test}: cannot run mount ({e})");
            None
        }
    }
}
