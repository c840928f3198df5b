//! Topic log throughput: append of 200-byte records (single and batches of 200) and
//! sequential reads with `LogReader`, plus a channel's next+finish. CRCs included.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_store::{ChannelState, LogOptions, NewRecord, TopicLog};

const BODY: [u8; 200] = [0x5a; 200];

fn rec() -> NewRecord<'static> {
    NewRecord {
        timestamp_ns: 1,
        deliver_at_ns: 0,
        body: &BODY,
    }
}

fn open(dir: &std::path::Path) -> TopicLog {
    TopicLog::open(dir, LogOptions::default()).unwrap().0
}

fn append(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single_200B", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(log.append(rec()).unwrap());
            }
            let t = start.elapsed();
            log.retain_from(log.next_seq()).unwrap(); // keep the disk footprint bounded
            t
        })
    });
    let batch = vec![rec(); 200];
    g.throughput(Throughput::Elements(200));
    g.bench_function("batch_200x200B", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(log.append_batch(&batch).unwrap());
            }
            let t = start.elapsed();
            log.retain_from(log.next_seq()).unwrap();
            t
        })
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let batch = vec![rec(); 1000];
    for _ in 0..500 {
        log.append_batch(&batch).unwrap(); // 500k records, ~116 MB
    }
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1));
    let mut reader = log.reader(log.first_seq());
    g.bench_function("sequential_200B", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            let mut start = Instant::now();
            for _ in 0..iters {
                match reader.next(&log).unwrap() {
                    Some(r) => {
                        black_box(&r.body);
                    }
                    None => {
                        t += start.elapsed();
                        reader.seek(log.first_seq());
                        start = Instant::now();
                        black_box(reader.next(&log).unwrap());
                    }
                }
            }
            t + start.elapsed()
        })
    });
    let mut ch = ChannelState::new(log.first_seq());
    g.bench_function("channel_next_finish_200B", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            let mut start = Instant::now();
            for _ in 0..iters {
                match ch.next(&log, 0, 1, 1).unwrap() {
                    Some(d) => ch.finish(d.record.seq, 1).unwrap(),
                    None => {
                        t += start.elapsed();
                        ch = ChannelState::new(log.first_seq());
                        start = Instant::now();
                    }
                }
            }
            t + start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
