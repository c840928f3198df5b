//! `ferry import-nsqd` (the dry run) as a process on nsqd 1.x data directories written by the
//! test: its counts, that it changes nothing, that brokerd then imports what it counted, and
//! its one-line errors.

#[path = "../../../brokerd/tests/it/common/nsqd.rs"]
mod nsqd;

use std::path::Path;

use crate::common::{args, broker_with, ferry, text};
use nsqd::{Queued, Rng, nsqd_files, write_nsqd_dat, write_queue};

fn bytes(q: &[Queued]) -> usize {
    q.iter().map(|m| m.body.len()).sum()
}

/// The row of `topic`/`channel` (`-`: the topic's backlog): [messages, bytes, paused].
fn row(stdout: &str, topic: &str, channel: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 5 && w[0] == topic && w[1] == channel)
        .unwrap_or_else(|| panic!("no row {topic} {channel} in:\n{stdout}"))[2..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

async fn dry_run(dir: &Path) -> (bool, String, String) {
    let out = ferry(args(&["import-nsqd", "--data-path", dir.to_str().unwrap()])).await;
    let (stdout, stderr) = text(&out);
    (out.status.success(), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_what_brokerd_then_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(42);
    write_nsqd_dat(
        dir,
        &serde_json::json!({"version": "1.2.1", "topics": [
            {"name": "orders", "paused": false, "channels": [
                {"name": "billing", "paused": false}, {"name": "audit", "paused": true}]},
            {"name": "lonely", "paused": true, "channels": []},
            {"name": "bad/name", "paused": false, "channels": []},
        ]}),
    );
    let orders = write_queue(dir, "orders", 120, 700, false, true, &mut rng);
    let billing = write_queue(dir, "orders:billing", 0, 500, true, false, &mut rng);
    let audit = write_queue(dir, "orders:audit", 60, 300, true, true, &mut rng);
    let lonely = write_queue(dir, "lonely", 30, 200, false, false, &mut rng);
    let before = nsqd_files(dir);

    let (ok, stdout, stderr) = dry_run(dir).await;
    assert!(ok, "{stdout}{stderr}");
    let r = |n: &[Queued], paused: &str| {
        vec![
            n.len().to_string(),
            bytes(n).to_string(),
            paused.to_string(),
        ]
    };
    assert_eq!(row(&stdout, "orders", "-"), r(&orders, "no"));
    assert_eq!(row(&stdout, "orders", "billing"), r(&billing, "no"));
    assert_eq!(row(&stdout, "orders", "audit"), r(&audit, "yes"));
    assert_eq!(row(&stdout, "lonely", "-"), r(&lonely, "yes"));
    let all = [&orders[..], &billing, &audit, &lonely].concat();
    let total = format!(
        "total: 2 topics, 2 channels, {} messages, {} bytes",
        all.len(),
        bytes(&all)
    );
    assert!(stdout.contains(&total), "{stdout}");
    assert!(
        stdout.contains("warning: skipping invalid topic name \"bad/name\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("imports this at its next start"),
        "{stdout}"
    );
    assert!(nsqd_files(dir) == before, "the dry run changes nothing");
    assert!(!dir.join("topics").exists() && !dir.join("nsqd-import.json").exists());

    // brokerd imports exactly what the dry run counted.
    let b = broker_with(|c| c.data_path = dir.to_path_buf()).await;
    let stats = b.stats().await;
    let depth = |ch: &str| stats.channel("orders", ch).unwrap().depth as usize;
    assert_eq!(depth("billing"), billing.len() + orders.len());
    assert_eq!(depth("audit"), audit.len() + orders.len());
    assert_eq!(stats.topic("lonely").unwrap().depth as usize, lonely.len());
    b.stop().await;

    let (ok, stdout, stderr) = dry_run(dir).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("already imported by brokerd"), "{stdout}");
    assert!(nsqd_files(dir) == before);
}

#[tokio::test]
async fn missing_or_corrupt_data_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let (ok, stdout, stderr) = dry_run(&dir.join("nope")).await;
    assert!(!ok && stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");

    let (ok, _, stderr) = dry_run(dir).await;
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("holds no nsqd.dat"), "{stderr}");

    std::fs::write(dir.join("nsqd.dat"), "{\"topics\": 3}").unwrap();
    let (ok, _, stderr) = dry_run(dir).await;
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nsqd.dat"), "{stderr}");

    write_nsqd_dat(
        dir,
        &serde_json::json!({"version": "1.3.0", "topics": [{"name": "t", "paused": false, "channels": []}]}),
    );
    write_queue(dir, "t", 0, 100, false, false, &mut Rng(1));
    let path = dir.join("t.diskqueue.000000.dat");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (ok, _, stderr) = dry_run(dir).await;
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("t.diskqueue.000000.dat"), "{stderr}");
    assert!(stderr.contains("truncated record"), "{stderr}");
}
