//! A broker whose disk fills up: publishes fail with E_PUB_FAILED (never a crash or SIGBUS),
//! `/ping` reports NOK, every acknowledged message is still delivered, and publishing works again
//! once there is room. Needs root to mount a small tmpfs; otherwise it says why it skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Proc;

use common::*;
use ferry_proto::v2::{Command, Frame};

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Proc::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let out = Proc::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .ok()?;
    if out.status.success() {
        Some(Mount(dir.to_path_buf()))
    } else {
        eprintln!(
            "skipping: cannot mount a tmpfs here ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        None
    }
}

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
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut p = b.conn().await;
        p.send(&Command::Pub {
            topic: "t".into(),
            body: b"again".to_vec().into(),
        })
        .await;
        match p.next().await {
            Frame::Response(r) if &r[..] == b"OK" => break,
            Frame::Error(_) => {}
            f => panic!("{f:?}"),
        }
        assert!(
            tokio::time::Instant::now() < end,
            "publishing never recovered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(&c.message().await.body[..], b"again");
    assert_eq!(b.http("GET", "/ping", b"").await, (200, "OK".into()));
    drop(c);
    b.stop().await;
}
