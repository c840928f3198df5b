//! A Python client of the gRPC API: grpcio and grpcio-tools from PyPI (installed into `.venv` by
//! `scripts/setup-test-deps.sh`), stubs generated from `proto/` by the script itself.

use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_client_publishes_and_consumes() {
    let b = crate::common::start(|_| {}).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/python/grpc_client.py");
    let proto = root.join("proto");
    let addr = b.grpc.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(crate::common::python())
            .arg(script)
            .arg(addr)
            .arg(proto)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python gRPC client failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("{stdout}");
    let c = b
        .wait_channel("pygrpc", "py", "the stream ended", |c| c.client_count == 0)
        .await;
    assert_eq!(c.message_count, 102, "{c:?}");
    assert_eq!(c.depth, 0, "{c:?}");
    assert_eq!(c.in_flight_count, 0, "{c:?}");
    assert_eq!(c.requeue_count, 0, "{c:?}");
    b.stop().await;
}
