//! Segments start small and grow: an idle topic costs kilobytes, growth and rotation keep
//! every record, a full disk during a growth step fails cleanly, and recovery handles
//! partly grown files (torn tails below the allocated length, odd and sparse lengths).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::{body, mount_tmpfs, opts, patch, read_all, rec, record_offsets, segment_files};
use ferry_store::{NewRecord, TopicLog, TopicMeta, save_meta};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Disk used by a directory and the files in it, as `du` counts it (`st_blocks * 512`).
fn du(dir: &Path) -> u64 {
    let own = std::fs::metadata(dir).unwrap().blocks() * 512;
    let files: u64 = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum();
    own + files
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Every segment file has all its blocks (no sparse file), stays within `max_len`, and the
/// log's `disk_bytes` is the sum of their lengths.
fn assert_segments_allocated(log: &TopicLog, dir: &Path, max_len: u64) {
    let mut total = 0;
    for f in segment_files(dir) {
        let m = std::fs::metadata(&f).unwrap();
        assert!(
            m.blocks() * 512 >= m.len(),
            "{} is sparse: {} bytes, {} blocks",
            f.display(),
            m.len(),
            m.blocks()
        );
        assert!(m.len() <= max_len, "{} has {} bytes", f.display(), m.len());
        total += m.len();
    }
    assert_eq!(log.stats().disk_bytes, total);
}

#[test]
fn an_idle_topic_costs_at_most_256_kib() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idle.topic");
    // Default options: 100 MiB segments.
    let (log, _) = TopicLog::open(&dir, ferry_store::LogOptions::default()).unwrap();
    let s = log.append(rec(b"just one message")).unwrap();
    log.sync().unwrap();
    save_meta(&dir, &TopicMeta::default()).unwrap(); // what the broker writes beside it
    let used = du(&dir);
    assert!(used <= 256 * KIB, "an idle topic takes {used} bytes");
    assert_eq!(log.stats().disk_bytes, 64 * KIB);
    assert_segments_allocated(&log, &dir, 64 * KIB);
    drop(log);
    // Reopening does not grow it either.
    let (log, report) = TopicLog::open(&dir, ferry_store::LogOptions::default()).unwrap();
    assert_eq!(report.records, 1);
    assert_eq!(&log.read(s).unwrap().unwrap().body[..], b"just one message");
    assert!(du(&dir) <= 256 * KIB, "{} bytes after reopen", du(&dir));
}

/// Body length of record `i` in the growth test: mostly small, every 37th larger than the
/// first allocation of a segment (64 KiB), one larger than a whole segment.
fn varied_len(i: u64) -> usize {
    match i {
        333 => (1536 * KIB) as usize,
        i if i % 37 == 5 => (70 * KIB) as usize + i as usize,
        i => 1 + ((i * 7919) % 3000) as usize,
    }
}

/// Appends `n` records starting at body index `from`: singles and batches of 1 to 9.
fn append_varied(log: &TopicLog, from: u64, n: u64) {
    let mut i = from;
    while i < from + n {
        let k = (1 + i % 9).min(from + n - i);
        let bodies: Vec<Vec<u8>> = (i..i + k).map(|j| body(j, varied_len(j))).collect();
        let recs: Vec<NewRecord<'_>> = bodies.iter().map(|b| rec(b)).collect();
        let range = log.append_batch(&recs).unwrap();
        assert_eq!(range, 1000 + i..1000 + i + k);
        i += k;
    }
}

fn check_all(log: &TopicLog, n: u64) {
    for i in 0..n {
        let r = log.read(1000 + i).unwrap().unwrap();
        assert_eq!(r.body.len(), varied_len(i), "seq {}", 1000 + i);
        assert_eq!(&r.body[..], &body(i, varied_len(i))[..], "seq {}", 1000 + i);
    }
    let all = read_all(log);
    assert_eq!(all.len() as u64, n);
    for (k, (s, b)) in all.iter().enumerate() {
        assert_eq!(*s, 1000 + k as u64);
        assert_eq!(*b, body(k as u64, varied_len(k as u64)), "seq {s}");
    }
}

#[test]
fn appends_across_growth_steps_rotation_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cap = MIB;
    let (log, _) = TopicLog::open(dir, opts(cap)).unwrap();
    // A few small records: the first segment stays at its first allocation.
    append_varied(&log, 0, 4);
    assert_eq!(segment_files(dir).len(), 1);
    assert_eq!(file_len(&segment_files(dir)[0]), 64 * KIB);
    // Growth steps inside the first segment: one 70 KiB record (at i = 5) and more.
    append_varied(&log, 4, 60);
    let lens: Vec<u64> = segment_files(dir).iter().map(|f| file_len(f)).collect();
    assert!(
        lens.iter()
            .all(|l| [128, 256, 512, 1024].contains(&(l / KIB))),
        "{lens:?}"
    );
    assert_segments_allocated(&log, dir, cap);
    check_all(&log, 64);

    drop(log);
    let (log, report) = TopicLog::open(dir, opts(cap)).unwrap();
    assert_eq!(report.records, 64);
    assert_eq!(
        (report.torn_tail_bytes, report.corrupt_records_skipped),
        (0, 0)
    );
    // On across many rotations, the oversized record (i = 333) included.
    append_varied(&log, 64, 300);
    assert_segments_allocated(&log, dir, 1536 * KIB + 64);
    check_all(&log, 364);

    drop(log);
    let (log, report) = TopicLog::open(dir, opts(cap)).unwrap();
    assert_eq!(report.records, 364);
    assert_eq!(
        (report.torn_tail_bytes, report.corrupt_records_skipped),
        (0, 0)
    );
    append_varied(&log, 364, 100);
    check_all(&log, 464);
    let files = segment_files(dir);
    assert!(files.len() >= 4, "{} segments", files.len());
    // Sealed segments were filled before the next one started; the oversized record has a
    // segment of its own size.
    let big = files
        .iter()
        .find(|f| file_len(f) > cap)
        .expect("oversized segment");
    assert_eq!(record_offsets(big).len(), 1);
    assert_segments_allocated(&log, dir, 1536 * KIB + 64);
    // Everything was appended once: no segment holds more than it needs plus one step.
    let data: u64 = (0..464u64).map(|i| 40 + varied_len(i) as u64).sum();
    let disk = log.stats().disk_bytes;
    assert!(
        disk < data + files.len() as u64 * cap,
        "{disk} bytes for {data}"
    );
}

/// A full disk during a growth step of the active segment: the append fails with nothing
/// of it visible (also after reopen), and appends work again once space is freed.
#[test]
fn disk_full_during_a_growth_step() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_path_buf();
    let Some(_tmpfs) = mount_tmpfs(&mnt, "2m", "disk_full_during_a_growth_step") else {
        return;
    };
    // 2 MiB - 1.6 MiB leaves ~450 KiB: room for a segment of 64, 128, 256 KiB, not 512.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![1u8; 1600 * 1024]).unwrap();
    let dir = mnt.join("topic");
    let (log, _) = TopicLog::open(&dir, opts(MIB)).unwrap();
    let mut n = 0u64;
    let err = loop {
        let b = body(n, 1000);
        match log.append(rec(&b)) {
            Ok(s) => assert_eq!(s, 1000 + n),
            Err(e) => break e,
        }
        n += 1;
        assert!(n < 2000, "never ran out of space");
    };
    assert!(err.is_disk_full(), "{err:?}");
    // It failed growing the first segment (not creating another one).
    let files = segment_files(&dir);
    assert_eq!(files.len(), 1);
    assert_eq!(log.stats().disk_bytes, 256 * KIB);
    assert!(n > 200, "{n}");
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| body(10_000 + i, 1000)).collect();
    let recs: Vec<NewRecord<'_>> = bodies.iter().map(|b| rec(b)).collect();
    assert!(log.append_batch(&recs).unwrap_err().is_disk_full());
    assert_eq!(log.next_seq(), 1000 + n);
    assert!(log.read(1000 + n).unwrap().is_none());
    let check = |log: &TopicLog| {
        let all = read_all(log);
        assert_eq!(all.len() as u64, n);
        assert!(all.iter().all(|(s, b)| *b == body(s - 1000, 1000)));
        assert_eq!(
            &log.read(1000).unwrap().unwrap().body[..],
            &body(0, 1000)[..]
        );
    };
    check(&log);

    // Reopen on the still full disk: nothing partial, same failure.
    drop(log);
    let (log, report) = TopicLog::open(&dir, opts(MIB)).unwrap();
    assert_eq!(report.records, n, "{report:?}");
    assert_eq!(
        (report.torn_tail_bytes, report.corrupt_records_skipped),
        (0, 0)
    );
    check(&log);
    assert!(log.append(rec(&body(n, 1000))).unwrap_err().is_disk_full());
    check(&log);

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(log.append(rec(b"room again")).unwrap(), 1000 + n);
    assert_eq!(log.append_batch(&recs).unwrap(), 1000 + n + 1..1000 + n + 4);
    assert_eq!(log.stats().disk_bytes, 512 * KIB);
    log.sync().unwrap();
    drop(log);
    let (log, report) = TopicLog::open(&dir, opts(MIB)).unwrap();
    assert_eq!(report.records, n + 4);
    assert_eq!(
        &log.read(1000 + n).unwrap().unwrap().body[..],
        b"room again"
    );
    assert_eq!(
        &log.read(1000 + n + 3).unwrap().unwrap().body[..],
        &bodies[2][..]
    );
}

/// Writes 150 records of 1000 bytes (the file grows to 256 KiB) and returns the end of the
/// last record.
fn write_partly_grown(dir: &Path) -> u64 {
    let (log, _) = TopicLog::open(dir, opts(MIB)).unwrap();
    for i in 0..150 {
        log.append(rec(&body(i, 1000))).unwrap();
    }
    drop(log);
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    assert_eq!(file_len(&files[0]), 256 * KIB);
    let offs = record_offsets(&files[0]);
    assert_eq!(offs.len(), 150);
    offs[149] + 1032 // stride of a 1000-byte body: 8 + 24 + 1000
}

/// After reopening: the 150 records are there, appends continue and grow the file on.
fn continue_after_recovery(dir: &Path) {
    let (log, report) = TopicLog::open(dir, opts(MIB)).unwrap();
    assert_eq!(report.records, 150, "{report:?}");
    assert_eq!(report.corrupt_records_skipped, 0, "{report:?}");
    assert_eq!(log.next_seq(), 1150);
    for i in 150..400 {
        assert_eq!(log.append(rec(&body(i, 1000))).unwrap(), 1000 + i);
    }
    assert_segments_allocated(&log, dir, MIB);
    drop(log);
    let (log, report) = TopicLog::open(dir, opts(MIB)).unwrap();
    assert_eq!(report.records, 400, "{report:?}");
    assert_eq!(report.torn_tail_bytes + report.corrupt_records_skipped, 0);
    let all = read_all(&log);
    assert_eq!(all.len(), 400);
    assert!(all.iter().all(|(s, b)| *b == body(s - 1000, 1000)));
}

/// A torn record right behind the tail and unsynced garbage further up, both below the
/// allocated length (what a power loss can leave): the tail is cut, appends continue.
#[test]
fn torn_tail_in_a_partly_grown_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let end = write_partly_grown(dir);
    let seg = &segment_files(dir)[0];
    let mut torn = Vec::new();
    torn.extend_from_slice(&1024u32.to_le_bytes()); // len of a 1000-byte body
    torn.extend_from_slice(&0x0bad_c0deu32.to_le_bytes());
    torn.extend_from_slice(&1150u64.to_le_bytes());
    torn.extend_from_slice(&[0xcd; 200]);
    patch(seg, end, &torn);
    patch(seg, 256 * KIB - 16, &[0xee; 16]); // the last bytes of the file
    let (log, report) = TopicLog::open(dir, opts(MIB)).unwrap();
    assert_eq!(report.torn_tail_bytes, 256 * KIB - end, "{report:?}");
    assert_eq!(file_len(seg), 256 * KIB, "recovery never truncates");
    drop(log);
    continue_after_recovery(dir);
}

/// The file lost its last growth but kept part of a record (length cut inside it), or kept
/// a growth with an odd length and nothing written: both recover, and the file grows on.
#[test]
fn odd_and_short_lengths_of_the_active_segment() {
    for (name, cut) in [("inside a record", -500i64), ("odd length", 1001)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let end = write_partly_grown(dir);
        let seg = &segment_files(dir)[0];
        let len = end.checked_add_signed(cut).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg)
            .unwrap()
            .set_len(len)
            .unwrap();
        if cut < 0 {
            // The last record is cut: it is a torn tail, the 149 before it stay.
            let (log, report) = TopicLog::open(dir, opts(MIB)).unwrap();
            assert_eq!(report.records, 149, "{name}: {report:?}");
            assert!(report.torn_tail_bytes > 0, "{name}: {report:?}");
            assert_eq!(log.append(rec(&body(149, 1000))).unwrap(), 1149);
            drop(log);
        }
        continue_after_recovery(dir);
    }
}

/// A segment file extended sparsely (copied with `cp --sparse`, say): reopening fills the
/// holes the writer will write into, so a full disk can never turn into a SIGBUS.
#[test]
fn holes_in_the_active_segment_are_filled_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_partly_grown(dir);
    let seg = &segment_files(dir)[0];
    let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
    f.set_len(384 * KIB).unwrap(); // 128 KiB hole at the end
    drop(f);
    let m = std::fs::metadata(seg).unwrap();
    if m.blocks() * 512 >= m.len() {
        eprintln!("skipping: this file system does not make sparse files");
        return;
    }
    let (log, _) = TopicLog::open(dir, opts(MIB)).unwrap();
    assert_segments_allocated(&log, dir, MIB);
    assert_eq!(log.stats().disk_bytes, 384 * KIB);
    drop(log);
    continue_after_recovery(dir);
}
