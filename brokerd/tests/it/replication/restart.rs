//! A rolling restart of the whole group under load.

use super::{Cluster, PyReader, wait_all_delivered};
use crate::common::eventually;

/// Every broker of the group is restarted in turn under load (SIGTERM for the first two, SIGKILL
/// for the last), each one back and caught up before the next goes: every acknowledged message
/// reaches a pynsq Reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_nothing() {
    const TOPIC: &str = "ledger";
    let mut cluster = Cluster::start().await;
    cluster.create(TOPIC, 2).await;
    let (leader, _) = cluster.wait_leader(TOPIC, &[0, 1, 2]).await;
    cluster.create_channel(TOPIC, "c", leader).await;
    cluster.wait_listed(TOPIC).await;
    let reader = PyReader::start(cluster.lookupd.http, TOPIC, "c");
    let stop = tokio_util::sync::CancellationToken::new();
    let (acked, publishers) = cluster.publish_everywhere(TOPIC, "r", true, &stop);
    let acked_count = || acked.lock().unwrap().len();

    for i in 0..3 {
        let before = acked_count();
        eventually("100 more acknowledged", || async {
            (acked_count() >= before + 100).then_some(())
        })
        .await;
        let committed = cluster.wait_leader(TOPIC, &[0, 1, 2]).await.1.commit_index;
        let broker = cluster.brokers[i].take().unwrap();
        if i < 2 {
            broker.sigterm();
        } else {
            broker.kill9();
        }
        let down = acked_count();
        eventually("publishes go on while a broker is down", || async {
            (acked_count() >= down + 100).then_some(())
        })
        .await;
        cluster.restart(i);
        cluster.wait_rejoined(i, TOPIC, committed).await;
        eprintln!(
            "broker {i} restarted; {} acknowledged so far",
            acked_count()
        );
    }
    stop.cancel();
    for p in publishers {
        p.await.unwrap();
    }
    let all = wait_all_delivered(&acked, &[&reader]).await;
    eprintln!("{all} acknowledged messages, all delivered");
}
