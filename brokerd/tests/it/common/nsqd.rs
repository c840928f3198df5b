//! Writes nsqd 1.x data directories as nsqd does (go-diskqueue files, `nsqd.dat`), for the
//! import tests (brokerd's and the CLI's, which includes this file).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One go-diskqueue being written: `<name>.diskqueue.%06d.dat` files that roll over before a
/// write would pass `max_bytes` (go-diskqueue 1.1+), and `<name>.diskqueue.meta.dat`.
pub struct DiskQueue {
    dir: PathBuf,
    name: String,
    max_bytes: u64,
    file_num: u64,
    pos: u64,
    file: Option<File>,
    read: (u64, u64),
    depth: i64,
    next_id: u64,
}

impl DiskQueue {
    pub fn new(dir: &Path, name: &str, max_bytes: u64) -> DiskQueue {
        DiskQueue {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            max_bytes,
            file_num: 0,
            pos: 0,
            file: None,
            read: (0, 0),
            depth: 0,
            next_id: 0,
        }
    }

    fn data_path(&self, num: u64) -> PathBuf {
        self.dir
            .join(format!("{}.diskqueue.{num:06}.dat", self.name))
    }

    /// Appends one nsqd message: `[size BE][timestamp BE][attempts BE][16 hex id][body]`.
    pub fn put(&mut self, timestamp_ns: i64, attempts: u16, body: &[u8]) {
        let mut data = Vec::with_capacity(26 + body.len());
        data.extend_from_slice(&timestamp_ns.to_be_bytes());
        data.extend_from_slice(&attempts.to_be_bytes());
        data.extend_from_slice(format!("{:016x}", self.next_id).as_bytes());
        data.extend_from_slice(body);
        self.next_id += 1;
        let total = 4 + data.len() as u64;
        if self.pos > 0 && self.pos + total > self.max_bytes {
            self.file_num += 1;
            self.pos = 0;
            self.file = None;
        }
        if self.file.is_none() {
            let path = self.data_path(self.file_num);
            self.file = Some(File::create(path).unwrap());
        }
        let f = self.file.as_mut().unwrap();
        f.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
        f.write_all(&data).unwrap();
        self.pos += total;
        self.depth += 1;
    }

    /// Everything written so far was consumed: the read position moves here.
    pub fn consume_all(&mut self) {
        self.read = (self.file_num, self.pos);
        self.depth = 0;
    }

    /// Deletes the data files before the read file, as nsqd does once it has read them.
    pub fn delete_consumed_files(&self) {
        for n in 0..self.read.0 {
            std::fs::remove_file(self.data_path(n)).unwrap();
        }
    }

    /// Data files this queue has.
    pub fn files(&self) -> u64 {
        self.file_num + 1
    }

    /// Writes the meta file: `depth\nreadFileNum,readPos\nwriteFileNum,writePos\n`.
    pub fn finish(self) {
        std::fs::write(
            self.dir.join(format!("{}.diskqueue.meta.dat", self.name)),
            format!(
                "{}\n{},{}\n{},{}\n",
                self.depth, self.read.0, self.read.1, self.file_num, self.pos
            ),
        )
        .unwrap();
    }
}

/// Writes `<dir>/nsqd.dat`.
pub fn write_nsqd_dat(dir: &Path, meta: &serde_json::Value) {
    std::fs::write(dir.join("nsqd.dat"), serde_json::to_vec(meta).unwrap()).unwrap();
}

/// Contents of every nsqd file in `dir` (`nsqd.dat` and disk queue files).
pub fn nsqd_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name == "nsqd.dat" || name.contains(".diskqueue.") {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// A small deterministic generator (xorshift64*), so datasets are reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One queued message of a generated dataset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Queued {
    pub body: Vec<u8>,
    pub attempts: u16,
    pub timestamp_ns: i64,
}

/// Writes queue `name` with `consumed` already-read messages before `count` queued ones
/// (bodies `<name>/<i>` padded to varied lengths, some with attempts > 0 when `retries`);
/// returns the queued ones.
pub fn write_queue(
    dir: &Path,
    name: &str,
    consumed: usize,
    count: usize,
    retries: bool,
    delete_consumed: bool,
    rng: &mut Rng,
) -> Vec<Queued> {
    let mut q = DiskQueue::new(dir, name, 8 * 1024);
    let base = 1_700_000_000_000_000_000i64;
    for i in 0..consumed {
        q.put(base, 1, format!("CONSUMED {name}/{i}").as_bytes());
    }
    q.consume_all();
    assert!(
        consumed == 0 || q.read.1 > 0,
        "{name}: read position inside a file"
    );
    if delete_consumed {
        q.delete_consumed_files();
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let pad = rng.below(300) as usize;
        let mut body = format!("{name}/{i}/").into_bytes();
        body.extend(std::iter::repeat_n(b'x', pad));
        let attempts = if retries && rng.below(3) == 0 {
            1 + rng.below(5) as u16
        } else {
            0
        };
        let timestamp_ns = base + i as i64 * 1000 + rng.below(1000) as i64;
        q.put(timestamp_ns, attempts, &body);
        out.push(Queued {
            body,
            attempts,
            timestamp_ns,
        });
    }
    assert!(count == 0 || q.files() > 2, "{name} spans several files");
    q.finish();
    out
}
