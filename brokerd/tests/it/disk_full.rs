//! A broker whose disk fills up: publishes fail with E_PUB_FAILED (never a crash or SIGBUS),
//! `/ping` reports NOK, every acknowledged message is still delivered, and publishing works again
//! once there is room. Needs root to mount a small tmpfs; otherwise it says why it skipped.

use std::path::{Path, PathBuf};

use crate::common::*;
use ferry_proto::v2::{Command, Frame};

#[tokio::test]
async fn full_disk_fails_publishes_cleanly_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_tmpfs(tmp.path(), "3m") else {
        return;
    };
    let b = start_in(tmp.path(), |c| c.max_bytes_per_file = 512 * 1024).await;
    let (code, _) = b
        .http("POST", "/channel/create?topic=t&channel=c", b"")
        .await;
    assert_eq!(code, 200);

    let body = vec![b'x'; 64 * 1024];
    let mut acked = 0usize;
    let mut p = b.conn().await;
    loop {
        p.send(&Command::Pub {
            topic: "t".into(),
            body: body.clone().into(),
        })
        .await;
        match p.next().await {
            Frame::Response(r) if &r[..] == b"OK" => acked += 1,
            Frame::Error(e) => {
                let text = String::from_utf8_lossy(&e);
                assert!(text.starts_with("E_PUB_FAILED"), "{text}");
                break;
            }
            f => panic!("{f:?}"),
        }
        assert!(acked < 1000, "the 3 MiB disk never filled up");
    }
    p.expect_closed().await;
    assert!(acked > 0);
    let (code, text) = b.http("GET", "/ping", b"").await;
    assert_eq!(code, 500, "{text}");
    assert!(text.starts_with("NOK"), "{text}");

    // Every acknowledged message is delivered.
    let mut c = b.consumer("t", "c", 50).await;
    for _ in 0..acked {
        let m = c.message().await;
        assert_eq!(m.body.len(), body.len());
        c.fin(&m.id).await;
    }
    c.expect_no_message(std::time::Duration::from_millis(200))
        .await;

    // Consumed segments are released at the next sync; then publishing works again.
    eventually("publishing to recover", || async {
        let mut p = b.conn().await;
        p.send(&Command::Pub {
            topic: "t".into(),
            body: b"again".to_vec().into(),
        })
        .await;
        match p.next().await {
            Frame::Response(r) if &r[..] == b"OK" => Some(()),
            Frame::Error(_) => None,
            f => panic!("{f:?}"),
        }
    })
    .await;
    assert_eq!(&c.message().await.body[..], b"again");
    assert_eq!(b.http("GET", "/ping", b"").await, (200, "OK".into()));
    drop(c);
    b.stop().await;
}

/// Fills the file system holding `dir` with one file; returns its path (remove it to free).
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    // Single pages may still be free: use them up too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    path
}

/// Names of the entries of the broker's topics directory.
fn topic_dirs(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("topics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn full_disk_fails_creations_cleanly_and_leaves_no_phantom() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_tmpfs(tmp.path(), "4m") else {
        return;
    };
    let data = tmp.path().join("data");
    let b = start_in(&data, |c| c.max_bytes_per_file = 512 * 1024).await;
    let (code, _) = b.http("POST", "/topic/create?topic=kept", b"").await;
    assert_eq!(code, 200);
    let before = topic_dirs(&data);
    let filler = fill(tmp.path());

    // Over HTTP: nsqd's INTERNAL_ERROR, nothing left on disk.
    let (code, body) = b.http("POST", "/topic/create?topic=phantom", b"").await;
    assert_eq!(
        (code, body.as_str()),
        (500, r#"{"message":"INTERNAL_ERROR"}"#)
    );
    let (code, _) = b.http("POST", "/pub?topic=phantom2", b"x").await;
    assert_eq!(code, 500);
    // Over TCP: PUB to a new topic is E_PUB_FAILED, SUB to a new channel E_SUB_FAILED.
    let mut p = b.conn().await;
    p.send(&Command::Pub {
        topic: "phantom3".into(),
        body: b"x".to_vec().into(),
    })
    .await;
    let text = p.expect_error("E_PUB_FAILED").await;
    assert!(text.contains("disk full"), "{text}");
    let mut s = b.conn().await;
    s.identify(serde_json::json!({})).await;
    s.send(&Command::Sub {
        topic: "kept".into(),
        channel: "phantom_channel".into(),
    })
    .await;
    s.expect_error("E_SUB_FAILED").await;
    assert_eq!(topic_dirs(&data), before);
    let stats = b.stats().await;
    let kept = stats.topic("kept").unwrap();
    assert!(kept.channels.is_empty(), "{kept:?}");
    for t in ["phantom", "phantom2", "phantom3"] {
        assert!(stats.topic(t).is_none(), "{t} in {stats:?}");
    }
    drop((p, s));
    b.stop().await;

    // After a restart (with room again) none of them comes back.
    std::fs::remove_file(filler).unwrap();
    let b = start_in(&data, |c| c.max_bytes_per_file = 512 * 1024).await;
    let stats = b.stats().await;
    let topics: Vec<&str> = stats.topics.iter().map(|t| t.topic_name.as_str()).collect();
    assert_eq!(topics, ["kept"]);
    assert!(stats.channel("kept", "phantom_channel").is_none());
    // And creating them now works.
    let (code, _) = b.http("POST", "/pub?topic=phantom", b"x").await;
    assert_eq!(code, 200);
    b.stop().await;
}
