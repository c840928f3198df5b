//! Recovery from damaged files, process crashes (SIGKILL) and a full disk.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{body, mount_tmpfs, opts, patch, read_all, rec, record_offsets, segment_files};
use ferry_store::{LogOptions, NewRecord, TopicLog};

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    for i in 0..20 {
        log.append(rec(&body(i, 100))).unwrap();
    }
    drop(log);
    let files = segment_files(tmp.path());
    assert_eq!(files.len(), 1);
    let offs = record_offsets(&files[0]);
    let end = offs[19] + 136;
    // A record whose header made it to the page cache but whose body did not.
    let mut torn = Vec::new();
    torn.extend_from_slice(&124u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&1020u64.to_le_bytes());
    torn.extend_from_slice(&[0xab; 48]);
    patch(&files[0], end, &torn);

    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.records, 20);
    assert_eq!(report.torn_tail_bytes, 64);
    assert_eq!(report.corrupt_records_skipped, 0);
    assert_eq!(log.next_seq(), 1020);
    assert_eq!(read_all(&log).len(), 20);
    assert_eq!(log.append(rec(b"next")).unwrap(), 1020);
    drop(log);
    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.records, 21);
    assert_eq!(&log.read(1020).unwrap().unwrap().body[..], b"next");
}

/// A batch interrupted before its commit point leaves whole, valid records behind an end
/// marker. They were never acknowledged: after a shorter append over them and another crash
/// none of them may come back (neither as messages nor as "corruption").
#[test]
fn leftovers_of_an_interrupted_batch_never_resurface() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(1 << 20)).unwrap();
    let first = log.append(rec(b"acked")).unwrap();
    let batch: Vec<Vec<u8>> = (0..4).map(|i| body(i, 200)).collect();
    let recs: Vec<NewRecord<'_>> = batch.iter().map(|b| rec(b)).collect();
    log.append_batch(&recs).unwrap();
    drop(log);
    // Undo the batch's commit: its first `len` back to zero, as a crash before it leaves it.
    let files = segment_files(tmp.path());
    let offs = record_offsets(&files[0]);
    assert_eq!(offs.len(), 5);
    patch(&files[0], offs[1], &0u32.to_le_bytes());

    let (log, report) = TopicLog::open(tmp.path(), opts(1 << 20)).unwrap();
    assert_eq!(
        (report.records, report.corrupt_records_skipped),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(log.next_seq(), first + 1);
    // A shorter record lands where the batch began, then the process dies again.
    assert_eq!(log.append(rec(b"short")).unwrap(), first + 1);
    drop(log);

    let (log, report) = TopicLog::open(tmp.path(), opts(1 << 20)).unwrap();
    assert_eq!(
        (
            report.records,
            report.corrupt_records_skipped,
            report.torn_tail_bytes
        ),
        (2, 0, 0),
        "{report:?}"
    );
    let bodies: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(bodies, [b"acked".to_vec(), b"short".to_vec()]);
    assert_eq!(log.append(rec(b"next")).unwrap(), first + 2);
}

/// A batch that needed a new segment and died before its commit point leaves that segment
/// under its temporary name; recovery deletes it instead of adopting its records.
#[test]
fn a_segment_of_an_uncommitted_batch_is_not_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    let first = log.append(rec(b"acked")).unwrap();
    drop(log);
    // What an interrupted rotation leaves: a complete segment file that was never renamed.
    let donor = tempfile::tempdir().unwrap();
    let donor_opts = LogOptions {
        initial_seq: first + 1,
        ..opts(4096)
    };
    let (other, _) = TopicLog::open(donor.path(), donor_opts).unwrap();
    for i in 0..3 {
        other.append(rec(&body(i, 100))).unwrap();
    }
    drop(other);
    let donor_file = segment_files(donor.path()).remove(0);
    let name = format!("{}.tmp", donor_file.file_name().unwrap().to_str().unwrap());
    std::fs::copy(&donor_file, tmp.path().join(&name)).unwrap();

    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert!(
        !tmp.path().join(&name).exists(),
        "pending segment left behind"
    );
    assert_eq!(report.records, 1, "{report:?}");
    assert_eq!(log.append(rec(b"next")).unwrap(), first + 1);
}

#[test]
fn corrupt_records_in_the_middle_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    for i in 0..100 {
        log.append(rec(&body(i, 100))).unwrap();
    }
    drop(log);
    let files = segment_files(tmp.path());
    assert!(files.len() >= 4);
    let per = record_offsets(&files[0]).len() as u64; // records per full segment
    let o0 = record_offsets(&files[0]);
    let o1 = record_offsets(&files[1]);
    let o2 = record_offsets(&files[2]);
    patch(&files[0], o0[5] + 50, &[0x55]); // body byte: CRC mismatch
    patch(&files[0], o0[o0.len() - 1] + 40, &[0x55]); // last record of a sealed segment
    patch(&files[1], o1[10], &0xffff_fff0u32.to_le_bytes()); // absurd len
    patch(&files[2], o2[0] + 8, &[0x77]); // seq of a segment's first record
    let lost = [1005, 1000 + per - 1, 1000 + per + 10, 1000 + 2 * per];

    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.corrupt_records_skipped, 4, "{report:?}");
    assert_eq!(report.corrupt_bytes_skipped, 4 * 136, "{report:?}");
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.records, 96);
    assert_eq!(log.stats().corrupt_skipped, 4);
    for s in 1000..1100 {
        let r = log.read(s).unwrap();
        if lost.contains(&s) {
            assert!(r.is_none(), "seq {s}");
        } else {
            assert_eq!(&r.unwrap().body[..], &body(s - 1000, 100)[..], "seq {s}");
        }
    }
    let all = read_all(&log);
    assert_eq!(all.len(), 96);
    assert!(
        all.iter()
            .all(|(s, b)| !lost.contains(s) && *b == body(s - 1000, 100))
    );
    assert_eq!(log.append(rec(b"more")).unwrap(), 1100);
    drop(log);
    // The tail of the sealed segment was zeroed; the holes are found again.
    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.corrupt_records_skipped, 3, "{report:?}");
    assert_eq!(read_all(&log).len(), 97);
}

#[test]
fn bad_segment_headers_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    for i in 0..100 {
        log.append(rec(&body(i, 100))).unwrap();
    }
    drop(log);
    let files = segment_files(tmp.path());
    let n0 = record_offsets(&files[0]).len() as u64;
    patch(&files[0], 0, b"NOTMAGIC");
    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.bad_segments_skipped, 1);
    assert_eq!(report.segments, files.len());
    assert_eq!(report.records, 100 - n0);
    assert!(log.read(1000).unwrap().is_none());
    let all = read_all(&log);
    assert_eq!(all.len() as u64, 100 - n0);
    assert_eq!(all[0].0, 1000 + n0);
    // retain_from deletes the bad segment once everything before the next one is done.
    assert_eq!(log.retain_from(1000 + n0).unwrap(), 1);
    assert!(!files[0].exists());
    drop(log);

    // A bad *last* segment: a new one is started after it, seqs never go back.
    let files = segment_files(tmp.path());
    let last = files.last().unwrap().clone();
    patch(&last, 20, &[0xff]);
    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.bad_segments_skipped, 1);
    let s = log.append(rec(b"x")).unwrap();
    assert!(s > 1000, "{s}");
    assert_eq!(&log.read(s).unwrap().unwrap().body[..], b"x");
    drop(log);
    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.bad_segments_skipped, 1);
    assert_eq!(&log.read(s).unwrap().unwrap().body[..], b"x");
}

#[test]
fn odd_files_in_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    for i in 0..10 {
        log.append(rec(&body(i, 100))).unwrap();
    }
    drop(log);
    std::fs::write(tmp.path().join("00000000000000000001.seg"), b"").unwrap();
    std::fs::write(tmp.path().join("00000000000000009999.seg"), b"short").unwrap();
    std::fs::write(tmp.path().join("00000000000000005000.seg.tmp"), b"partial").unwrap();
    std::fs::write(tmp.path().join("notes.txt"), b"hello").unwrap();
    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.bad_segments_skipped, 2);
    assert_eq!(report.records, 10);
    assert!(!tmp.path().join("00000000000000005000.seg.tmp").exists());
    assert_eq!(read_all(&log).len(), 10);
    let s = log.append(rec(b"y")).unwrap();
    assert_eq!(s, 10_000, "seqs continue after the bad last segment's base");
    assert_eq!(&log.read(s).unwrap().unwrap().body[..], b"y");
}

/// Random damage anywhere: opening never panics, and the log stays usable.
#[test]
fn random_damage_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let (log, _) = TopicLog::open(&pristine, opts(2048)).unwrap();
    for i in 0..60 {
        log.append(rec(&body(i, 90 + (i as usize % 40)))).unwrap();
    }
    drop(log);
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..40 {
        let dir = tmp.path().join(format!("r{round}"));
        std::fs::create_dir(&dir).unwrap();
        for f in segment_files(&pristine) {
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
        let files = segment_files(&dir);
        for _ in 0..(1 + next() % 6) {
            let f = &files[(next() % files.len() as u64) as usize];
            let len = std::fs::metadata(f).unwrap().len();
            let off = next() % len;
            let n = 1 + next() % 64;
            let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            patch(f, off, &bytes);
        }
        let (log, report) = TopicLog::open(&dir, opts(2048)).unwrap();
        let all = read_all(&log);
        assert!(all.len() as u64 <= report.records, "round {round}");
        for (s, b) in &all {
            let i = s - 1000;
            assert_eq!(*b, body(i, 90 + (i as usize % 40)), "round {round} seq {s}");
        }
        let s = log.append(rec(b"z")).unwrap();
        assert_eq!(&log.read(s).unwrap().unwrap().body[..], b"z");
        drop(log);
        let (log, _) = TopicLog::open(&dir, opts(2048)).unwrap();
        assert_eq!(&log.read(s).unwrap().unwrap().body[..], b"z");
    }
}

const CRASH_ENV: &str = "FERRY_STORE_CRASH_CHILD_DIR";

/// Segment size of a crash round: small segments (many rotations) in odd rounds; in even
/// ones segments that grow several times (64 KiB, 128, 256, then 400 = capacity) while the
/// child is killed, from a log the previous round wrote with the other size.
fn crash_segment_bytes(round: u64) -> u64 {
    if round % 2 == 1 {
        64 * 1024
    } else {
        400 * 1024
    }
}

fn crash_body(round: u64, i: u64) -> Vec<u8> {
    body(round * 1_000_000 + i, 1 + ((i * 37) % 700) as usize)
}

/// The child: append forever, printing each acknowledged seq and body CRC.
fn crash_child(dir: &Path) {
    let round: u64 = std::env::var("FERRY_STORE_CRASH_ROUND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (log, _) = TopicLog::open(dir, opts(crash_segment_bytes(round))).unwrap();
    let mut out = std::io::stdout().lock();
    let mut i = 0u64;
    while i < 5_000_000 {
        if i.is_multiple_of(10) {
            let bodies: Vec<Vec<u8>> = (i..i + 5).map(|j| crash_body(round, j)).collect();
            let recs: Vec<NewRecord<'_>> = bodies.iter().map(|b| rec(b)).collect();
            let range = log.append_batch(&recs).unwrap();
            for (s, b) in range.zip(&bodies) {
                writeln!(out, "REC {s} {}", crc32fast::hash(b)).unwrap();
            }
            i += 5;
        } else {
            let b = crash_body(round, i);
            let s = log.append(rec(&b)).unwrap();
            writeln!(out, "REC {s} {}", crc32fast::hash(&b)).unwrap();
            i += 1;
        }
        out.flush().unwrap();
    }
}

/// A child process appends in a loop and is SIGKILLed at an arbitrary point; every append
/// it saw acknowledged must be there, intact, and appending must continue.
#[test]
fn crash_sigkill() {
    if let Ok(dir) = std::env::var(CRASH_ENV) {
        crash_child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic");
    let mut acked: BTreeMap<u64, u32> = BTreeMap::new();
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize
        % 1000;
    for (round, kill_after) in [(1u64, 37 + jitter), (2, 1500 + jitter), (3, 4242), (4, 1)] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "recovery::crash_sigkill", // its name in the tests/it binary
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_ENV, &dir)
            .env("FERRY_STORE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let mut parts = line.split(' ');
            if parts.next() != Some("REC") {
                continue;
            }
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            let crc: u32 = parts.next().unwrap().parse().unwrap();
            assert!(acked.insert(seq, crc).is_none(), "seq {seq} reused");
            seen += 1;
            if seen == kill_after {
                child.kill().unwrap(); // SIGKILL; keep reading what it printed before dying
            }
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "child was not killed (round {round})");

        let (log, report) = TopicLog::open(&dir, opts(crash_segment_bytes(round))).unwrap();
        eprintln!("round {round}: {} acked, {report:?}", acked.len());
        assert_eq!(report.corrupt_records_skipped, 0, "{report:?}");
        for (&seq, &crc) in &acked {
            let r = log
                .read(seq)
                .unwrap()
                .unwrap_or_else(|| panic!("acked seq {seq} lost in round {round}"));
            assert_eq!(crc32fast::hash(&r.body), crc, "seq {seq} damaged");
        }
        let all = read_all(&log);
        assert!(all.len() >= acked.len());
        let max = *acked.keys().next_back().unwrap();
        let s = log.append(rec(b"after crash")).unwrap();
        assert!(s > max);
        acked.insert(s, crc32fast::hash(b"after crash"));
    }
}

/// On a full file system appends fail cleanly (no SIGBUS), everything appended stays
/// readable, and appends work again once space is freed.
#[test]
fn disk_full_then_space_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_path_buf();
    let Some(_tmpfs) = mount_tmpfs(&mnt, "2m", "disk_full_then_space_freed") else {
        return;
    };
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![1u8; 600 * 1024]).unwrap();
    let dir = mnt.join("topic");
    let (log, _) = TopicLog::open(&dir, opts(128 * 1024)).unwrap();
    let mut n = 0u64;
    let err = loop {
        let b = body(n, 1000);
        match log.append(rec(&b)) {
            Ok(s) => assert_eq!(s, 1000 + n),
            Err(e) => break e,
        }
        n += 1;
        assert!(n < 10_000, "never ran out of space");
    };
    assert!(err.is_disk_full(), "{err:?}");
    assert!(n > 100);
    // A batch fails as a whole too.
    let bodies: Vec<Vec<u8>> = (0..300).map(|i| body(i, 1000)).collect();
    let recs: Vec<NewRecord<'_>> = bodies.iter().map(|b| rec(b)).collect();
    assert!(log.append_batch(&recs).unwrap_err().is_disk_full());
    assert_eq!(log.next_seq(), 1000 + n);
    let all = read_all(&log);
    assert_eq!(all.len() as u64, n);
    assert!(all.iter().all(|(s, b)| *b == body(s - 1000, 1000)));

    std::fs::remove_file(&filler).unwrap();
    let s = log.append(rec(b"room again")).unwrap();
    assert_eq!(s, 1000 + n);
    assert_eq!(log.append_batch(&recs[..50]).unwrap().count(), 50);
    log.sync().unwrap();
    drop(log);
    let (log, report) = TopicLog::open(&dir, opts(128 * 1024)).unwrap();
    assert_eq!(report.records, n + 51);
    assert_eq!(&log.read(s).unwrap().unwrap().body[..], b"room again");
}
