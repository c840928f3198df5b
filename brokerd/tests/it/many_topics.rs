//! The shape of a real deployment on a small disk: thousands of topics with a message or two
//! each. Disk use follows the data (each idle topic costs at most 256 KiB), and every topic
//! survives a SIGKILL.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::common::*;

const TOPICS: usize = 2_000;
/// Most disk an idle topic with one message may use, metadata included.
const PER_TOPIC: u64 = 256 * 1024;

/// Bytes allocated under `dir`, as `du` counts them.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_topics_fit_a_small_disk_and_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let budget = TOPICS as u64 * PER_TOPIC;
    // Where mounting is not allowed, the disk-usage check alone holds the line.
    let _mount = mount_tmpfs(tmp.path(), &budget.to_string());
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();

    let b = spawn_brokerd(&data, &[]);
    let mut p = TestConn::connect(b.tcp).await;
    for i in 0..TOPICS {
        p.publish(&format!("t{i:04}"), format!("m{i}").as_bytes())
            .await;
    }
    let used = disk_usage(&data);
    eprintln!(
        "{TOPICS} topics with one message: {} KiB on disk ({} KiB each)",
        used / 1024,
        used / 1024 / TOPICS as u64
    );
    assert!(
        used < budget,
        "{used} bytes used, budget {budget} ({PER_TOPIC} per topic)"
    );
    b.kill9();

    let b = spawn_brokerd(&data, &[]);
    let topics = get_stats(b.http).await.topics;
    assert_eq!(topics.len(), TOPICS);
    assert!(
        topics.iter().all(|t| t.depth == 1),
        "every topic keeps its one message"
    );
    // Every message is there to read.
    for i in (0..TOPICS).step_by(7) {
        let mut c = TestConn::connect(b.tcp).await;
        c.identify(serde_json::json!({})).await;
        c.sub(&format!("t{i:04}"), "reader").await;
        c.rdy(1).await;
        assert_eq!(c.message().await.body, format!("m{i}").into_bytes());
    }
    b.kill9();
}
