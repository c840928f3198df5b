use super::*;

const INACTIVE: Duration = Duration::from_secs(300);
const TOMBSTONE: Duration = Duration::from_secs(45);

fn db() -> RegistrationDb {
    RegistrationDb::new(INACTIVE, TOMBSTONE)
}

fn info(host: &str, tcp: u16, http: u16) -> PeerInfo {
    PeerInfo {
        tcp_port: tcp,
        http_port: http,
        version: "1.3.0".into(),
        hostname: format!("{host}.local"),
        broadcast_address: host.into(),
    }
}

/// A db with peer 1 (`a`, 4150/4151) and peer 2 (`b`, 5150/5151) identified at `now`.
fn two_peers(now: Instant) -> RegistrationDb {
    let mut db = db();
    db.add_peer(1, info("a", 4150, 4151), "10.0.0.1:40001".into(), now);
    db.add_peer(2, info("b", 5150, 5151), "10.0.0.2:40002".into(), now);
    db
}

fn addresses(lookup: &Lookup) -> Vec<&str> {
    lookup
        .producers
        .iter()
        .map(|p| p.broadcast_address.as_str())
        .collect()
}

#[test]
fn register_adds_topic_and_channel() {
    let now = Instant::now();
    let mut db = two_peers(now);
    let added = db.register(1, "orders", Some("ship"));
    assert_eq!(
        added,
        [
            Registration::channel("orders", "ship"),
            Registration::topic("orders")
        ]
    );
    assert!(
        db.register(1, "orders", Some("ship")).is_empty(),
        "idempotent"
    );
    db.register(2, "orders", None);
    db.register(2, "audit", None);
    db.check_invariants();

    assert_eq!(db.topics(), ["audit", "orders"]);
    assert_eq!(db.channels("orders"), ["ship"]);
    assert!(db.channels("audit").is_empty());
    let lookup = db.lookup("orders", now).unwrap();
    assert_eq!(lookup.channels, ["ship"]);
    assert_eq!(addresses(&lookup), ["a", "b"]);
    assert_eq!(
        lookup.producers[0],
        Producer {
            remote_address: "10.0.0.1:40001".into(),
            hostname: "a.local".into(),
            broadcast_address: "a".into(),
            tcp_port: 4150,
            http_port: 4151,
            version: "1.3.0".into(),
        }
    );
    assert!(db.lookup("nope", now).is_none());
}

#[test]
fn register_needs_a_known_peer() {
    let mut db = db();
    assert!(db.register(9, "orders", None).is_empty());
    assert!(db.topics().is_empty());
    assert!(db.unregister(9, "orders", None).is_empty());
    db.check_invariants();
}

#[test]
fn unregister_channel_keeps_topic_and_drops_the_emptied_registration() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.register(1, "orders", Some("ship"));
    db.register(1, "orders", Some("bill"));
    db.register(2, "orders", Some("bill"));
    assert_eq!(
        db.unregister(1, "orders", Some("ship")),
        [Registration::channel("orders", "ship")]
    );
    db.unregister(1, "orders", Some("bill"));
    db.check_invariants();
    // The channel deleted on its only broker is gone (nsqlookupd would keep it as a ghost);
    // one another broker still holds stays.
    assert_eq!(db.channels("orders"), ["bill"]);
    assert_eq!(addresses(&db.lookup("orders", now).unwrap()), ["a", "b"]);
}

#[test]
fn unregister_topic_by_its_last_broker_forgets_it() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.register(1, "greet", Some("a"));
    db.register(2, "greet", None);
    db.unregister(1, "greet", None);
    assert_eq!(db.topics(), ["greet"], "broker 2 still holds it");
    db.unregister(2, "greet", None);
    db.check_invariants();
    assert!(db.topics().is_empty());
    assert!(db.lookup("greet", now).is_none());
    assert!(db.channels("greet").is_empty());
}

#[test]
fn unregister_topic_removes_its_channels_for_that_peer() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.register(1, "orders", Some("ship"));
    db.register(1, "orders", Some("bill"));
    db.register(1, "audit", Some("ship"));
    db.register(2, "orders", Some("ship"));
    let removed = db.unregister(1, "orders", None);
    assert_eq!(
        removed,
        [
            Registration::channel("orders", "bill"),
            Registration::channel("orders", "ship"),
            Registration::topic("orders"),
        ]
    );
    db.check_invariants();
    assert_eq!(addresses(&db.lookup("orders", now).unwrap()), ["b"]);
    assert_eq!(addresses(&db.lookup("audit", now).unwrap()), ["a"]);
    let nodes = db.nodes(now);
    assert_eq!(nodes[0].topics, ["audit"]);
    assert_eq!(nodes[1].topics, ["orders"]);
}

#[test]
fn remove_peer_leaves_every_registration() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.register(1, "orders", Some("ship"));
    db.register(1, "audit", None);
    db.register(2, "orders", None);
    let removed = db.remove_peer(1);
    assert_eq!(removed.len(), 4, "{removed:?}"); // client, 2 topics, 1 channel
    db.check_invariants();
    assert_eq!(db.peer_count(), 1);
    assert_eq!(addresses(&db.lookup("orders", now).unwrap()), ["b"]);
    assert!(db.lookup("audit", now).unwrap().producers.is_empty());
    assert_eq!(db.topics(), ["audit", "orders"], "registrations stay");
    assert_eq!(db.nodes(now).len(), 1);
    assert!(db.remove_peer(1).is_empty());
}

#[test]
fn ephemeral_channel_goes_with_its_last_producer() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.register(1, "orders", Some("tail#ephemeral"));
    db.register(2, "orders", Some("tail#ephemeral"));
    db.unregister(1, "orders", Some("tail#ephemeral"));
    assert_eq!(db.channels("orders"), ["tail#ephemeral"]);
    db.remove_peer(2);
    db.check_invariants();
    assert!(db.channels("orders").is_empty());
    assert_eq!(db.topics(), ["orders"], "a durable topic stays");
}

#[test]
fn ephemeral_topic_goes_with_its_channels() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.register(1, "t#ephemeral", Some("c"));
    db.register(1, "t#ephemeral", Some("e#ephemeral"));
    db.register(1, "durable", Some("c#ephemeral"));
    db.remove_peer(1);
    db.check_invariants();
    assert_eq!(db.topics(), ["durable"]);
    assert!(db.channels("t#ephemeral").is_empty());
    assert!(db.channels("durable").is_empty());

    db.register(2, "t#ephemeral", None);
    db.unregister(2, "t#ephemeral", None);
    assert!(db.topics().iter().all(|t| t != "t#ephemeral"));
    db.check_invariants();
}

#[test]
fn unregister_of_an_unheld_ephemeral_channel_drops_it_when_empty() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.create_channel("orders", "x#ephemeral");
    assert!(db.unregister(1, "orders", Some("x#ephemeral")).is_empty());
    assert!(db.channels("orders").is_empty());
}

#[test]
fn inactive_producers_are_hidden_until_they_ping() {
    let t0 = Instant::now();
    let mut db = two_peers(t0);
    db.register(1, "orders", None);
    db.register(2, "orders", None);
    let late = t0 + INACTIVE + Duration::from_secs(1);
    assert_eq!(db.touch(2, late), Some(INACTIVE + Duration::from_secs(1)));
    assert_eq!(addresses(&db.lookup("orders", late).unwrap()), ["b"]);
    assert_eq!(db.nodes(late).len(), 1);
    assert_eq!(
        addresses(&db.lookup("orders", t0 + INACTIVE).unwrap()),
        ["a", "b"],
        "exactly the timeout is still active"
    );
    db.touch(1, late);
    assert_eq!(addresses(&db.lookup("orders", late).unwrap()), ["a", "b"]);
    assert_eq!(db.touch(7, late), None);
}

#[test]
fn tombstone_hides_a_producer_for_its_lifetime() {
    let t0 = Instant::now();
    let mut db = two_peers(t0);
    db.register(1, "orders", None);
    db.register(1, "audit", None);
    db.register(2, "orders", None);
    assert_eq!(db.tombstone("orders", "a:4151", t0), 1);
    assert_eq!(
        db.tombstone("orders", "a:4150", t0),
        0,
        "HTTP port names a node"
    );
    assert_eq!(db.tombstone("nope", "a:4151", t0), 0);

    assert_eq!(addresses(&db.lookup("orders", t0).unwrap()), ["b"]);
    assert_eq!(addresses(&db.lookup("audit", t0).unwrap()), ["a"]);
    let nodes = db.nodes(t0);
    assert_eq!(nodes.len(), 2, "nodes lists tombstoned brokers");
    assert_eq!(nodes[0].topics, ["audit", "orders"]);
    assert_eq!(nodes[0].tombstones, [false, true]);
    assert_eq!(nodes[1].tombstones, [false]);

    // Re-registering does not lift a tombstone; its lifetime does.
    db.register(1, "orders", None);
    assert_eq!(addresses(&db.lookup("orders", t0).unwrap()), ["b"]);
    let later = t0 + TOMBSTONE;
    db.touch(1, later);
    db.touch(2, later);
    assert_eq!(addresses(&db.lookup("orders", later).unwrap()), ["a", "b"]);
    assert_eq!(db.nodes(later)[0].tombstones, [false, false]);
}

#[test]
fn tombstone_is_per_topic_and_cleared_by_reregistration_after_delete() {
    let t0 = Instant::now();
    let mut db = two_peers(t0);
    db.register(1, "orders", None);
    db.tombstone("orders", "a:4151", t0);
    // An operator deletes the topic, the broker registers it again: a fresh membership.
    assert!(db.delete_topic("orders"));
    db.register(1, "orders", None);
    db.check_invariants();
    assert_eq!(addresses(&db.lookup("orders", t0).unwrap()), ["a"]);
}

#[test]
fn http_create_and_delete() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.create_topic("empty");
    db.create_channel("orders", "ship");
    assert_eq!(db.topics(), ["empty", "orders"]);
    assert_eq!(db.channels("orders"), ["ship"]);
    let empty = db.lookup("empty", now).unwrap();
    assert!(empty.channels.is_empty() && empty.producers.is_empty());

    db.register(1, "orders", Some("bill"));
    assert!(db.delete_channel("orders", "bill"));
    assert!(!db.delete_channel("orders", "bill"));
    db.check_invariants();
    assert_eq!(db.channels("orders"), ["ship"]);
    assert_eq!(
        addresses(&db.lookup("orders", now).unwrap()),
        ["a"],
        "deleting a channel keeps the topic's producers"
    );

    assert!(db.delete_topic("orders"));
    db.check_invariants();
    assert_eq!(db.topics(), ["empty"]);
    assert!(db.channels("orders").is_empty());
    assert!(db.lookup("orders", now).is_none());
    assert!(db.nodes(now)[0].topics.is_empty());
    assert!(!db.delete_topic("orders"));
    assert!(db.delete_topic("empty"));
}

#[test]
fn channel_ranges_do_not_leak_into_neighbour_topics() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.register(1, "a", Some("x"));
    db.register(1, "a.b", Some("y"));
    db.register(1, "a-", Some("z"));
    db.register(1, "ab", Some("w"));
    assert_eq!(db.channels("a"), ["x"]);
    assert_eq!(db.channels("a.b"), ["y"]);
    assert_eq!(db.channels("ab"), ["w"]);
    assert_eq!(db.topics(), ["a", "a-", "a.b", "ab"]);
    db.unregister(1, "a", None);
    assert_eq!(db.channels("a.b"), ["y"]);
    assert_eq!(db.nodes(now)[0].topics, ["a-", "a.b", "ab"]);
}

#[test]
fn node_json_shape() {
    let now = Instant::now();
    let mut db = two_peers(now);
    db.register(1, "orders", None);
    let json = serde_json::to_value(&db.nodes(now)[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "remote_address": "10.0.0.1:40001",
            "hostname": "a.local",
            "broadcast_address": "a",
            "tcp_port": 4150,
            "http_port": 4151,
            "version": "1.3.0",
            "tombstones": [false],
            "topics": ["orders"],
        })
    );
}

/// Random operations keep the reverse index consistent and never panic.
#[test]
fn random_operations_keep_invariants() {
    let topics = ["t", "t#ephemeral", "u"];
    let channels = [None, Some("c"), Some("c#ephemeral")];
    let t0 = Instant::now();
    let mut db = db();
    // A small deterministic xorshift, so a failure replays.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for step in 0..5000 {
        let id = next(4) as PeerId;
        let topic = topics[next(topics.len())];
        let channel = channels[next(channels.len())];
        let now = t0 + Duration::from_millis(step);
        match next(9) {
            0 => db.add_peer(id, info("h", 1, 2), format!("r{id}"), now),
            1 => drop(db.remove_peer(id)),
            2 | 3 => drop(db.register(id, topic, channel)),
            4 => drop(db.unregister(id, topic, channel)),
            5 => drop(db.delete_topic(topic)),
            6 => match channel {
                Some(c) => drop(db.delete_channel(topic, c)),
                None => db.create_topic(topic),
            },
            7 => drop(db.tombstone(topic, "h:2", now)),
            _ => {
                drop(db.lookup(topic, now));
                drop(db.nodes(now));
            }
        }
        db.check_invariants();
    }
}
