//! Speed of the nsqd 1.x import: an nsqd data directory (written as go-diskqueue writes it) of
//! 200,000 100-byte messages, 100k in the topic's backlog, 80k in one channel's, 20k retried ones
//! in another's, imported into Ferry's topic log.
//!
//! `cargo bench -p ferry-brokerd --bench import_nsqd`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferry_store::LogOptions;

#[path = "../tests/it/common/nsqd.rs"]
#[allow(dead_code)] // the bench uses part of the tests' nsqd writer
mod nsqd;

const MESSAGES: u64 = 200_000;

fn write_dataset(dir: &std::path::Path) {
    let meta = r#"{"version":"1.3.0","topics":[{"name":"bench","paused":false,
        "channels":[{"name":"a","paused":false},{"name":"b","paused":false}]}]}"#;
    std::fs::write(dir.join("nsqd.dat"), meta).expect("write nsqd.dat");
    let body = [b'x'; 100];
    for (queue, n, attempts) in [
        ("bench", 100_000, 0),
        ("bench:a", 80_000, 0),
        ("bench:b", 20_000, 2),
    ] {
        let mut q = nsqd::DiskQueue::new(dir, queue, 100 << 20);
        for i in 0..n {
            q.put(1_700_000_000_000_000_000 + i, attempts, &body);
        }
        q.finish();
    }
}

fn import(c: &mut Criterion) {
    let mut group = c.benchmark_group("nsqd_import");
    group.sample_size(10);
    group.throughput(Throughput::Elements(MESSAGES));
    group.bench_function("200k_messages", |b| {
        b.iter_batched(
            || {
                let tmp = tempfile::tempdir().expect("temp dir");
                write_dataset(tmp.path());
                tmp
            },
            |tmp| {
                let topics = tmp.path().join("topics");
                std::fs::create_dir_all(&topics).expect("topics dir");
                let summary = ferry_brokerd::nsqd_import::import_on_start(
                    tmp.path(),
                    &topics,
                    &LogOptions::default(),
                )
                .expect("import")
                .expect("something imported");
                std::hint::black_box(summary);
                tmp
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, import);
criterion_main!(benches);
