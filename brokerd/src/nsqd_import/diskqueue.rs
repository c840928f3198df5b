//! A read-only, streaming reader of one go-diskqueue: the on-disk queue nsqd 1.x keeps per
//! topic (queue name = topic) and per channel (queue name = `<topic>:<channel>`).
//!
//! ```text
//!  <data>/<name>.diskqueue.meta.dat     text: "depth\nreadFileNum,readPos\nwriteFileNum,writePos\n"
//!  <data>/<name>.diskqueue.000042.dat   records, back to back:
//!
//!     +-------------+------------------------------------------------------------+
//!     | size u32 BE | data (size bytes) = an nsqd message:                       |
//!     |             | timestamp i64 BE (ns) | attempts u16 BE | id 16 B | body   |
//!     +-------------+------------------------------------------------------------+
//! ```
//!
//! The unread part of a queue runs from `(readFileNum, readPos)` to `(writeFileNum,
//! writePos)`: a file before `writeFileNum` is read to its end, then the next one from offset
//! 0. Files before `readFileNum` hold consumed data (nsqd deletes them; they may be absent or
//! present and are never opened). A missing meta file means an empty (or never used) queue.
//!
//! Invariants: nothing is ever written; memory is one record's buffer plus a read buffer;
//! every malformed byte becomes an [`ImportError`] naming the file (and offset), never a panic.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ImportError;

/// Bytes of an nsqd message before its body: timestamp, attempts, hex id.
pub const MESSAGE_HEADER: usize = 8 + 2 + 16;

const READ_BUFFER: usize = 1 << 20;

/// The positions saved in a queue's meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueMeta {
    /// Messages nsqd believed unread (informative; the positions are what count).
    pub depth: i64,
    /// File holding the next unread message.
    pub read_file: u64,
    /// Its offset there.
    pub read_pos: u64,
    /// File being appended to.
    pub write_file: u64,
    /// Offset of the next append there (end of the unread data).
    pub write_pos: u64,
}

/// One message read from a queue; borrows the reader's buffer until the next read.
#[derive(Debug, Clone, Copy)]
pub struct NsqdMessage<'a> {
    /// Publish time, ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// Deliveries nsqd already made.
    pub attempts: u16,
    /// nsqd's message id (16 hex characters); not carried over into Ferry.
    pub id: &'a [u8],
    /// The message body.
    pub body: &'a [u8],
}

/// Path of a queue's meta file.
pub fn meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.diskqueue.meta.dat"))
}

/// Path of a queue's data file number `num`.
pub fn data_path(dir: &Path, name: &str, num: u64) -> PathBuf {
    dir.join(format!("{name}.diskqueue.{num:06}.dat"))
}

/// Reads a queue's meta file; `Ok(None)` if there is none (empty queue).
pub fn read_meta(dir: &Path, name: &str) -> Result<Option<QueueMeta>, ImportError> {
    let path = meta_path(dir, name);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImportError::io("read", &path, e)),
    };
    let text = std::str::from_utf8(&text)
        .map_err(|e| ImportError::corrupt(&path, format!("not text: {e}")))?;
    parse_meta(text)
        .map(Some)
        .map_err(|reason| ImportError::corrupt(&path, reason))
}

/// Parses `"%d\n%d,%d\n%d,%d\n"` (go-diskqueue's `persistMetaData`).
fn parse_meta(text: &str) -> Result<QueueMeta, String> {
    let bad = || {
        let shown: String = text.chars().take(80).collect();
        format!(
            "bad diskqueue metadata {shown:?} (expected \"depth\\nreadFileNum,readPos\\nwriteFileNum,writePos\\n\")"
        )
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let depth: i64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(bad)?;
    let mut pair = || -> Result<(u64, u64), String> {
        let line = lines.next().ok_or_else(bad)?;
        let (a, b) = line.trim().split_once(',').ok_or_else(bad)?;
        let a = a.trim().parse().map_err(|e| format!("{}: {e}", bad()))?;
        let b = b.trim().parse().map_err(|e| format!("{}: {e}", bad()))?;
        Ok((a, b))
    };
    let (read_file, read_pos) = pair()?;
    let (write_file, write_pos) = pair()?;
    if lines.next().is_some() {
        return Err(bad());
    }
    if (read_file, read_pos) > (write_file, write_pos) {
        return Err(format!(
            "read position {read_file},{read_pos} is after write position {write_file},{write_pos}"
        ));
    }
    Ok(QueueMeta {
        depth,
        read_file,
        read_pos,
        write_file,
        write_pos,
    })
}

/// Reads the unread messages of one queue, in order.
#[derive(Debug)]
pub struct QueueReader {
    dir: PathBuf,
    name: String,
    meta: Option<QueueMeta>,
    /// File being read and its reader (`None` before opening it, or when it has nothing
    /// to read).
    file_num: u64,
    file: Option<BufReader<File>>,
    opened: bool,
    path: PathBuf,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
}

impl QueueReader {
    /// A reader of queue `name` in `dir` (nothing to read if it has no meta file).
    pub fn open(dir: &Path, name: &str) -> Result<QueueReader, ImportError> {
        let meta = read_meta(dir, name)?;
        let (file_num, pos) = meta.map_or((0, 0), |m| (m.read_file, m.read_pos));
        Ok(QueueReader {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            meta,
            file_num,
            file: None,
            opened: false,
            path: PathBuf::new(),
            pos,
            end: pos,
            buf: Vec::new(),
        })
    }

    /// The queue's meta file contents (`None`: no meta file).
    pub fn meta(&self) -> Option<QueueMeta> {
        self.meta
    }

    /// The next unread message, `Ok(None)` at the end.
    pub fn next_message(&mut self) -> Result<Option<NsqdMessage<'_>>, ImportError> {
        let Some(meta) = self.meta else {
            return Ok(None);
        };
        loop {
            if !self.opened {
                self.open_file(meta)?;
            }
            if self.pos < self.end {
                break;
            }
            if self.file_num >= meta.write_file {
                return Ok(None);
            }
            self.file_num += 1;
            self.pos = 0;
            self.file = None;
            self.opened = false;
        }
        let at = self.pos;
        let left = self.end - at;
        let path = &self.path;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| ImportError::corrupt(path, "data file not open"))?;
        if left < 4 {
            return Err(ImportError::corrupt(
                path,
                format!("truncated record at offset {at}: {left} bytes left, a size takes 4"),
            ));
        }
        let mut size = [0u8; 4];
        file.read_exact(&mut size)
            .map_err(|e| ImportError::io("read", path, e))?;
        let size = u32::from_be_bytes(size);
        if (size as usize) < MESSAGE_HEADER || size > i32::MAX as u32 {
            return Err(ImportError::corrupt(
                path,
                format!("invalid message size {size} at offset {at}"),
            ));
        }
        if u64::from(size) > left - 4 {
            return Err(ImportError::corrupt(
                path,
                format!(
                    "truncated record at offset {at}: size {size} but only {} bytes left",
                    left - 4
                ),
            ));
        }
        self.buf.resize(size as usize, 0);
        file.read_exact(&mut self.buf)
            .map_err(|e| ImportError::io("read", path, e))?;
        self.pos = at + 4 + u64::from(size);
        let b = &self.buf;
        Ok(Some(NsqdMessage {
            timestamp_ns: i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            attempts: u16::from_be_bytes([b[8], b[9]]),
            id: &b[10..MESSAGE_HEADER],
            body: &b[MESSAGE_HEADER..],
        }))
    }

    /// Opens data file `file_num` at `pos` and sets where its unread part ends: its length
    /// for a file before the write file, `write_pos` for the write file.
    fn open_file(&mut self, meta: QueueMeta) -> Result<(), ImportError> {
        self.opened = true;
        self.path = data_path(&self.dir, &self.name, self.file_num);
        let path = &self.path;
        let is_last = self.file_num == meta.write_file;
        let file = match File::open(path) {
            Ok(f) => Some(f),
            // The write file is created by its first write; nothing to read from it yet.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && is_last && meta.write_pos == 0 =>
            {
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImportError::corrupt(
                    path,
                    "data file missing (the queue's metadata says it holds unread messages)",
                ));
            }
            Err(e) => return Err(ImportError::io("open", path, e)),
        };
        let Some(mut file) = file else {
            self.end = self.pos;
            return Ok(());
        };
        let len = file
            .metadata()
            .map_err(|e| ImportError::io("stat", path, e))?
            .len();
        self.end = if is_last { meta.write_pos } else { len };
        if self.end > len {
            return Err(ImportError::corrupt(
                path,
                format!(
                    "data file is {len} bytes but the queue's write position is {}",
                    self.end
                ),
            ));
        }
        if self.pos > self.end {
            return Err(ImportError::corrupt(
                path,
                format!(
                    "read position {} is past the end of the data ({})",
                    self.pos, self.end
                ),
            ));
        }
        if self.pos > 0 {
            file.seek(SeekFrom::Start(self.pos))
                .map_err(|e| ImportError::io("seek", path, e))?;
        }
        self.file = Some(BufReader::with_capacity(READ_BUFFER, file));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::nsqd_import::testutil::Writer;

    fn read_all(dir: &Path, name: &str) -> Result<Vec<(u16, Vec<u8>)>, ImportError> {
        let mut r = QueueReader::open(dir, name)?;
        let mut out = Vec::new();
        while let Some(m) = r.next_message()? {
            assert_eq!(m.id, b"0123456789abcdef");
            assert_eq!(m.timestamp_ns, 1_700_000_000_000_000_000);
            out.push((m.attempts, m.body.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn parses_meta_files() {
        let m = parse_meta("12\n3,40\n5,60\n").unwrap();
        assert_eq!(
            m,
            QueueMeta {
                depth: 12,
                read_file: 3,
                read_pos: 40,
                write_file: 5,
                write_pos: 60
            }
        );
        assert_eq!(parse_meta("-1\n0,0\n0,0").unwrap().depth, -1);
        for bad in [
            "",
            "x\n0,0\n0,0\n",
            "1\n0,0\n",
            "1\n0;0\n0,0\n",
            "1\n0,-5\n0,0\n",
            "1\n0,0\n0,0\n7\n",
            "1\n2,0\n1,0\n",
            "1\n1,9\n1,8\n",
        ] {
            assert!(parse_meta(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn no_meta_file_is_an_empty_queue() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_all(tmp.path(), "t").unwrap().is_empty());
    }

    #[test]
    fn reads_across_rolled_files_from_the_read_position() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = Writer::new(tmp.path(), "t:c", 200);
        // Consumed: two whole files and part of the third.
        while w.file < 2 {
            w.put(9, b"consumed");
        }
        w.put(9, b"consumed too");
        let read = (w.file, w.pos);
        let mut want = Vec::new();
        for i in 0..100u16 {
            let body = format!("message {i}").into_bytes();
            w.put(i % 4, &body);
            want.push((i % 4, body));
        }
        w.meta(100, read);
        assert!(w.file > 4, "several files");
        // nsqd deleted the first consumed file; the second is still there (never opened).
        std::fs::remove_file(data_path(tmp.path(), "t:c", 0)).unwrap();
        assert_eq!(read_all(tmp.path(), "t:c").unwrap(), want);
    }

    #[test]
    fn empty_write_file_may_be_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = Writer::new(tmp.path(), "t", 10);
        w.put(0, b"a body longer than ten bytes");
        assert_eq!((w.file, w.pos), (1, 0));
        w.meta(1, (0, 0));
        assert_eq!(read_all(tmp.path(), "t").unwrap().len(), 1);
        // Everything read: positions equal, files gone.
        std::fs::remove_file(data_path(tmp.path(), "t", 0)).unwrap();
        w.meta(0, (1, 0));
        assert!(read_all(tmp.path(), "t").unwrap().is_empty());
    }

    #[test]
    fn data_past_the_write_position_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = Writer::new(tmp.path(), "t", 1 << 20);
        w.put(0, b"one");
        w.meta(1, (0, 0));
        w.put(0, b"written after the last metadata sync");
        assert_eq!(
            read_all(tmp.path(), "t").unwrap(),
            vec![(0, b"one".to_vec())]
        );
    }

    #[test]
    fn corrupt_data_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let expect = |name: &str, what: &str| {
            let err = read_all(dir, name).unwrap_err().to_string();
            assert!(err.contains(&format!("{name}.diskqueue.")), "{err}");
            assert!(err.contains(what), "{err}");
        };

        // A size below the message header.
        let mut w = Writer::new(dir, "small", 1 << 20);
        w.put(0, b"fine");
        w.put_raw(b"short");
        w.meta(2, (0, 0));
        expect("small", "invalid message size 5 at offset 34");

        // A record cut short by the end of the file (meta claims more than was written).
        let mut w = Writer::new(dir, "torn", 1 << 20);
        w.put(0, b"fine");
        w.meta(1, (0, 0));
        let path = data_path(dir, "torn", 0);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&100u32.to_be_bytes()).unwrap();
        f.write_all(&[0u8; 50]).unwrap();
        std::fs::write(meta_path(dir, "torn"), "2\n0,0\n0,88\n").unwrap();
        expect("torn", "truncated record at offset 34");

        // The write position beyond the file.
        std::fs::write(meta_path(dir, "torn"), "2\n0,0\n0,9999\n").unwrap();
        expect("torn", "write position is 9999");

        // A read position past the end of a rolled file.
        let mut w = Writer::new(dir, "past", 10);
        w.put(0, b"a body longer than ten bytes");
        w.put(0, b"another");
        std::fs::write(meta_path(dir, "past"), "1\n0,5000\n2,0\n").unwrap();
        expect("past", "read position 5000 is past the end");

        // A missing file in the middle.
        let mut w = Writer::new(dir, "gap", 10);
        for _ in 0..3 {
            w.put(0, b"a body longer than ten bytes");
        }
        w.meta(3, (0, 0));
        std::fs::remove_file(data_path(dir, "gap", 1)).unwrap();
        expect("gap", "data file missing");

        // Unparsable metadata names the meta file.
        std::fs::write(meta_path(dir, "meta"), "garbage").unwrap();
        expect("meta", "bad diskqueue metadata");
    }
}
