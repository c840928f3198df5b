//! Interop with pynsq, the real NSQ Python client from PyPI (installed into `.venv` by
//! `scripts/setup-test-deps.sh`): Writer, Reader, HTTP publishing, two channels, shared channel.

use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynsq_writer_reader_and_http_publish() {
    let b = crate::common::start(|_| {}).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/interop.py");
    let (tcp, http) = (b.tcp.to_string(), b.http.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(crate::common::python())
            .arg(script)
            .arg(tcp)
            .arg(http)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pynsq interop failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let s = b.stats().await;
    for ch in ["alpha", "beta"] {
        let c = s.channel("interop", ch).unwrap();
        assert_eq!(c.message_count, 700, "{ch}: {c:?}");
        assert_eq!(c.depth, 0);
    }
    b.stop().await;
}
