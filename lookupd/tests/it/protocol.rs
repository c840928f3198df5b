//! Lookup protocol V1 against a real daemon: every command and error, and what registrations
//! become visible over HTTP.

use crate::common::{LookupdPeers, Peer, broker_info, eventually, start};
use ferry_proto::lookup::LookupCommand;
use serde_json::json;

#[tokio::test]
async fn ping_before_identify_is_ok() {
    let lookupd = start(|_| {}).await;
    let mut peer = lookupd.peer().await;
    peer.ping().await;
    peer.ping().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn identify_replies_with_lookupds_own_info() {
    let lookupd = start(|_| {}).await;
    let mut peer = lookupd.peer().await;
    let reply = peer.identify(broker_info("b1", 4150, 4151)).await;
    let keys: Vec<&String> = reply.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "broadcast_address",
            "hostname",
            "http_port",
            "tcp_port",
            "version"
        ]
    );
    assert_eq!(reply["tcp_port"], lookupd.tcp.port());
    assert_eq!(reply["http_port"], lookupd.http.port());
    assert_eq!(reply["broadcast_address"], "127.0.0.1");
    assert_eq!(reply["version"], ferry_lookupd::VERSION);
    assert!(!reply["hostname"].as_str().unwrap().is_empty());
    // Identified but registered nowhere: a node without topics.
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(nodes["producers"][0]["topics"], json!([]));
    lookupd.stop().await;
}

#[tokio::test]
async fn identify_requires_nsqlookupds_fields() {
    let lookupd = start(|_| {}).await;
    for missing in ["broadcast_address", "tcp_port", "http_port", "version"] {
        let mut body = broker_info("b1", 4150, 4151);
        body.as_object_mut().unwrap().remove(missing);
        let mut peer = lookupd.peer().await;
        peer.send(&LookupCommand::Identify(
            serde_json::to_vec(&body).unwrap().into(),
        ))
        .await;
        peer.expect_fatal("E_BAD_BODY IDENTIFY missing fields")
            .await;
    }
    // hostname is optional.
    let mut body = broker_info("b1", 4150, 4151);
    body.as_object_mut().unwrap().remove("hostname");
    let mut peer = lookupd.peer().await;
    assert_eq!(peer.identify(body).await["broadcast_address"], "127.0.0.1");
    lookupd.stop().await;
}

#[tokio::test]
async fn identify_with_bad_json_is_fatal() {
    let lookupd = start(|_| {}).await;
    let mut peer = lookupd.peer().await;
    peer.send(&LookupCommand::Identify(b"{not json".to_vec().into()))
        .await;
    peer.expect_fatal("E_BAD_BODY IDENTIFY failed to decode JSON body")
        .await;
    assert!(lookupd.get_json("/nodes").await["producers"] == json!([]));
    lookupd.stop().await;
}

#[tokio::test]
async fn second_identify_is_fatal_and_unregisters() {
    let lookupd = start(|_| {}).await;
    let mut peer = lookupd.broker("b1", 4150, 4151).await;
    peer.register("orders", None).await;
    peer.send(&LookupCommand::Identify(
        serde_json::to_vec(&broker_info("b1", 4150, 4151))
            .unwrap()
            .into(),
    ))
    .await;
    peer.expect_fatal("E_INVALID cannot IDENTIFY again").await;
    eventually("the broker's registrations to go", || async {
        lookupd.producers("orders").await == Some(vec![])
    })
    .await;
    lookupd.stop().await;
}

#[tokio::test]
async fn register_and_unregister_need_identify() {
    let lookupd = start(|_| {}).await;
    for line in [
        &b"REGISTER orders\n"[..],
        b"UNREGISTER orders ch\n",
        // The state is checked before the parameters, as in nsqlookupd.
        b"REGISTER bad!name\n",
        b"REGISTER\n",
    ] {
        let mut peer = lookupd.peer().await;
        peer.send_raw(line).await;
        peer.expect_fatal("E_INVALID client must IDENTIFY").await;
    }
    lookupd.stop().await;
}

#[tokio::test]
async fn bad_names_and_params_are_fatal() {
    let lookupd = start(|_| {}).await;
    let cases: [(&[u8], &str); 6] = [
        (
            b"REGISTER bad!topic\n",
            "E_BAD_TOPIC REGISTER topic name 'bad!topic' is not valid",
        ),
        (
            b"REGISTER orders bad!chan\n",
            "E_BAD_CHANNEL REGISTER channel name 'bad!chan' is not valid",
        ),
        (
            b"UNREGISTER bad!topic\n",
            "E_BAD_TOPIC UNREGISTER topic name 'bad!topic' is not valid",
        ),
        (
            b"UNREGISTER orders bad!chan\n",
            "E_BAD_CHANNEL UNREGISTER channel name 'bad!chan' is not valid",
        ),
        (
            b"REGISTER\n",
            "E_INVALID REGISTER insufficient number of params",
        ),
        (b"FROB x\n", "E_INVALID invalid command FROB"),
    ];
    for (line, error) in cases {
        let mut peer = lookupd.broker("b1", 4150, 4151).await;
        peer.send_raw(line).await;
        peer.expect_fatal(error).await;
    }
    lookupd.stop().await;
}

#[tokio::test]
async fn huge_bodies_and_endless_lines_are_refused_without_buffering() {
    let lookupd = start(|_| {}).await;
    // A declared IDENTIFY body of 2 GiB - 1: refused from the size alone.
    let mut peer = lookupd.peer().await;
    let mut cmd = b"IDENTIFY\n".to_vec();
    cmd.extend_from_slice(&i32::MAX.to_be_bytes());
    peer.send_raw(&cmd).await;
    peer.expect_fatal(&format!(
        "E_BAD_BODY IDENTIFY body too big {} > {}",
        i32::MAX,
        1 << 20
    ))
    .await;
    // A negative size is no better.
    let mut peer = lookupd.peer().await;
    let mut cmd = b"IDENTIFY\n".to_vec();
    cmd.extend_from_slice(&(-1i32).to_be_bytes());
    peer.send_raw(&cmd).await;
    let reply = peer.response().await.expect("an error before the close");
    assert!(reply.starts_with(b"E_BAD_BODY"), "{reply:?}");
    peer.expect_closed().await;
    // 64 KiB with no newline: E_INVALID, not an ever-growing buffer.
    let mut peer = lookupd.broker("b1", 4150, 4151).await;
    peer.send_raw(&vec![b'A'; 64 * 1024]).await;
    let reply = peer.response().await.expect("an error before the close");
    assert!(
        reply.starts_with(b"E_INVALID command line too long"),
        "{reply:?}"
    );
    peer.expect_closed().await;
    // The daemon is unharmed.
    let mut peer = lookupd.broker("b2", 4250, 4251).await;
    peer.register("orders", None).await;
    assert_eq!(lookupd.producers("orders").await.map(|p| p.len()), Some(1));
    lookupd.stop().await;
}

#[tokio::test]
async fn bad_magic_gets_e_bad_protocol_and_close() {
    let lookupd = start(|_| {}).await;
    let mut peer = Peer::connect_raw(lookupd.tcp).await;
    peer.send_raw(b"  V2").await;
    peer.expect_fatal("E_BAD_PROTOCOL").await;
    lookupd.stop().await;
}

#[tokio::test]
async fn registrations_show_over_http_and_vanish_on_disconnect() {
    let lookupd = start(|_| {}).await;
    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    let mut b2 = lookupd.broker("b2", 5150, 5151).await;
    b1.register("orders", Some("ship")).await;
    b1.register("audit", None).await;
    b2.register("orders", Some("bill")).await;

    assert_eq!(
        lookupd.producers("orders").await.unwrap(),
        ["b1", "b2"],
        "registered brokers are listed, sorted"
    );
    assert_eq!(
        lookupd.get_json("/channels?topic=orders").await,
        json!({"channels": ["bill", "ship"]})
    );
    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": ["audit", "orders"]})
    );

    drop(b1);
    eventually("b1's registrations to go", || async {
        lookupd.producers("orders").await.unwrap() == ["b2"]
    })
    .await;
    assert_eq!(
        lookupd.producers("audit").await.unwrap(),
        Vec::<String>::new()
    );
    // Like nsqlookupd, the registrations themselves stay.
    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": ["audit", "orders"]})
    );
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(nodes["producers"].as_array().unwrap().len(), 1);
    assert_eq!(nodes["producers"][0]["broadcast_address"], "b2");
    b2.ping().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn unregister_topic_takes_the_peers_channels() {
    let lookupd = start(|_| {}).await;
    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    let mut b2 = lookupd.broker("b2", 5150, 5151).await;
    b1.register("orders", Some("ship")).await;
    b2.register("orders", None).await;
    b1.unregister("orders", None).await;
    assert_eq!(lookupd.producers("orders").await.unwrap(), ["b2"]);
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(nodes["producers"][0]["topics"], json!([]));
    assert_eq!(nodes["producers"][1]["topics"], json!(["orders"]));

    b2.register("orders", Some("bill")).await;
    b2.unregister("orders", Some("bill")).await;
    assert_eq!(lookupd.producers("orders").await.unwrap(), ["b2"]);
    lookupd.stop().await;
}

#[tokio::test]
async fn ephemeral_registrations_go_with_their_last_producer() {
    let lookupd = start(|_| {}).await;
    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    let mut b2 = lookupd.broker("b2", 5150, 5151).await;
    b1.register("orders", Some("tail#ephemeral")).await;
    b2.register("orders", Some("tail#ephemeral")).await;
    b1.register("t#ephemeral", Some("c")).await;

    b1.unregister("orders", Some("tail#ephemeral")).await;
    assert_eq!(
        lookupd.get_json("/channels?topic=orders").await,
        json!({"channels": ["tail#ephemeral"]}),
        "b2 still has it"
    );
    b2.unregister("orders", Some("tail#ephemeral")).await;
    assert_eq!(
        lookupd.get_json("/channels?topic=orders").await,
        json!({"channels": []})
    );

    drop(b1);
    eventually("the ephemeral topic to go", || async {
        lookupd.get_json("/topics").await == json!({"topics": ["orders"]})
    })
    .await;
    assert_eq!(
        lookupd.get_json("/channels?topic=t%23ephemeral").await,
        json!({"channels": []})
    );
    lookupd.stop().await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let lookupd = start(|_| {}).await;
    let mut peer = lookupd.peer().await;
    let mut wire = bytes::BytesMut::new();
    LookupCommand::Ping.encode(&mut wire);
    LookupCommand::Identify(
        serde_json::to_vec(&broker_info("b1", 4150, 4151))
            .unwrap()
            .into(),
    )
    .encode(&mut wire);
    for topic in ["a", "b", "c"] {
        LookupCommand::Register {
            topic: topic.into(),
            channel: None,
        }
        .encode(&mut wire);
    }
    wire.extend_from_slice(b"  PING \r\n");
    wire.extend_from_slice(b"REGISTER d bad!chan\n");
    wire.extend_from_slice(b"REGISTER e\n");
    peer.send_raw(&wire).await;
    peer.expect_ok().await;
    let reply = peer.response().await.unwrap();
    assert!(reply.starts_with(b"{"), "{reply:?}");
    for _ in 0..4 {
        peer.expect_ok().await;
    }
    peer.expect_fatal("E_BAD_CHANNEL REGISTER channel name 'bad!chan' is not valid")
        .await;
    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": ["a", "b", "c"]}),
        "nothing after the error was executed"
    );
    eventually("the broker to leave on the error", || async {
        lookupd.producers("a").await == Some(vec![])
    })
    .await;
    lookupd.stop().await;
}

#[tokio::test]
async fn a_line_split_across_writes_is_one_command() {
    let lookupd = start(|_| {}).await;
    let mut peer = lookupd.broker("b1", 4150, 4151).await;
    peer.send_raw(b"REGIS").await;
    peer.send_raw(b"TER orders").await;
    peer.send_raw(b" ship\n").await;
    peer.expect_ok().await;
    assert_eq!(
        lookupd.get_json("/channels?topic=orders").await,
        json!({"channels": ["ship"]})
    );
    lookupd.stop().await;
}

#[tokio::test]
async fn shutdown_closes_broker_connections() {
    let lookupd = start(|_| {}).await;
    let mut peer = lookupd.broker("b1", 4150, 4151).await;
    peer.register("orders", None).await;
    lookupd.stop().await;
    peer.expect_closed().await;
}
