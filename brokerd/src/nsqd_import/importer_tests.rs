//! Tests of `importer.rs`: the mapping read back from Ferry's files, and each crash point.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::nsqd_import::testutil::Writer;

/// Per channel (topic backlog under `""` when the topic has none): (body, nsqd attempts).
type Deliverable = BTreeMap<String, Vec<(String, u16)>>;

fn put(dir: &Path, queue: &str, msgs: &[(&str, u16)]) {
    let mut w = Writer::new(dir, queue, 64);
    w.put(0, b"consumed before the shutdown");
    let read = (w.file, w.pos);
    for (body, attempts) in msgs {
        w.put(*attempts, body.as_bytes());
    }
    w.meta(msgs.len() as i64, read);
}

/// Topic `t` (channels `a`, `b` paused), topic `solo` (no channel, paused).
fn nsqd_dir(dir: &Path) {
    std::fs::write(
        dir.join(NSQD_METADATA),
        r#"{"version":"1.2.1","topics":[
            {"name":"t","paused":false,"channels":[{"name":"a","paused":false},{"name":"b","paused":true}]},
            {"name":"solo","paused":true,"channels":[]},
            {"name":"bad name!","paused":false,"channels":[]}]}"#,
    )
    .unwrap();
    put(dir, "t", &[("t1", 0), ("t2", 0), ("t3", 0)]);
    put(dir, "t:a", &[("a1", 0), ("a2", 3), ("a3", 0), ("a4", 1)]);
    put(dir, "t:b", &[("b1", 2), ("b2", 0)]);
    put(dir, "solo", &[("s1", 0), ("s2", 0)]);
}

fn expected() -> BTreeMap<(String, String), Vec<(String, u16)>> {
    let v = |x: &[(&str, u16)]| {
        let mut v: Vec<_> = x.iter().map(|(b, a)| (b.to_string(), *a)).collect();
        v.sort();
        v
    };
    BTreeMap::from([
        (("solo".into(), "".into()), v(&[("s1", 0), ("s2", 0)])),
        (
            ("t".into(), "a".into()),
            v(&[
                ("a1", 0),
                ("a2", 3),
                ("a3", 0),
                ("a4", 1),
                ("t1", 0),
                ("t2", 0),
                ("t3", 0),
            ]),
        ),
        (
            ("t".into(), "b".into()),
            v(&[("b1", 2), ("b2", 0), ("t1", 0), ("t2", 0), ("t3", 0)]),
        ),
    ])
}

/// What each imported channel will deliver, read back from Ferry's files.
fn imported(topics_dir: &Path) -> BTreeMap<(String, String), Vec<(String, u16)>> {
    let mut out = BTreeMap::new();
    for topic in ["t", "solo"] {
        let dir = topic_dir(topics_dir, topic);
        let (log, _) = TopicLog::open(&dir, LogOptions::default()).unwrap();
        let meta = ferry_store::load_meta(&dir).unwrap().unwrap();
        let body = |seq| {
            let r = log.read(seq).unwrap().unwrap();
            String::from_utf8(r.body.to_vec()).unwrap()
        };
        let from = |start: u64| {
            (start..log.next_seq())
                .map(|s| (body(s), 0))
                .collect::<Vec<_>>()
        };
        let mut chans: Deliverable = BTreeMap::new();
        if meta.channels.is_empty() {
            chans.insert(String::new(), from(log.first_seq()));
        }
        for ch in &meta.channels {
            let mut v = from(ch.state.cursor);
            v.extend(ch.state.entries.iter().map(|e| {
                assert_eq!(e.kind, EntryKind::Requeued);
                (body(e.seq), e.attempts)
            }));
            chans.insert(ch.name.clone(), v);
        }
        for (ch, mut v) in chans {
            v.sort();
            out.insert((topic.to_string(), ch), v);
        }
    }
    out
}

fn flags(topics_dir: &Path, topic: &str) -> (bool, Vec<(String, bool)>) {
    let meta = ferry_store::load_meta(&topic_dir(topics_dir, topic))
        .unwrap()
        .unwrap();
    let chans = meta
        .channels
        .iter()
        .map(|c| (c.name.clone(), c.paused))
        .collect();
    (meta.paused, chans)
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let topics = data.join("topics");
    std::fs::create_dir_all(&topics).unwrap();
    nsqd_dir(&data);
    (tmp, data, topics)
}

#[test]
fn imports_each_channel_with_its_own_backlog_once() {
    let (_tmp, data, topics) = setup();
    let s = import_on_start(&data, &topics, &LogOptions::default())
        .unwrap()
        .unwrap();
    assert!(!s.resumed);
    assert_eq!(s.record.state, ImportState::Done);
    assert_eq!((s.record.messages, s.record.bytes), (11, 22));
    assert_eq!(s.record.topics.len(), 2, "the invalid name is skipped");
    assert_eq!(imported(&topics), expected());
    assert_eq!(
        flags(&topics, "t"),
        (false, vec![("a".into(), false), ("b".into(), true)])
    );
    assert_eq!(flags(&topics, "solo"), (true, vec![]));
    // `a` has the most fresh messages: its cursor covers them, only retried ones are entries.
    let meta = ferry_store::load_meta(&topic_dir(&topics, "t"))
        .unwrap()
        .unwrap();
    assert_eq!(meta.channels[0].state.entries.len(), 2);
    assert!(!data.join(STAGING_DIR).exists());
    assert_eq!(read_marker(&data).unwrap().unwrap(), s.record);

    // Done: a second start imports nothing.
    assert!(
        import_on_start(&data, &topics, &LogOptions::default())
            .unwrap()
            .is_none()
    );
    assert_eq!(imported(&topics), expected());
}

#[test]
fn a_crash_while_building_is_redone_from_scratch() {
    let (_tmp, data, topics) = setup();
    let junk = topic_dir(&data.join(STAGING_DIR), "t");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("half-written.seg"), b"junk").unwrap();
    import_on_start(&data, &topics, &LogOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(imported(&topics), expected());
    assert!(!data.join(STAGING_DIR).exists());
}

#[test]
fn a_crash_while_moving_topics_is_finished() {
    let (_tmp, data, topics) = setup();
    let plan = scan(&data).unwrap();
    let staging = data.join(STAGING_DIR);
    std::fs::create_dir_all(&staging).unwrap();
    let record = stage(&plan, &staging, &LogOptions::default()).unwrap();
    write_marker(&data, &record).unwrap();
    // One topic moved before the crash.
    std::fs::rename(topic_dir(&staging, "t"), topic_dir(&topics, "t")).unwrap();
    let s = import_on_start(&data, &topics, &LogOptions::default())
        .unwrap()
        .unwrap();
    assert!(s.resumed);
    assert_eq!(imported(&topics), expected());
    assert_eq!(
        read_marker(&data).unwrap().unwrap().state,
        ImportState::Done
    );
    assert!(!staging.exists());
}

#[test]
fn a_crash_after_the_done_marker_only_cleans_up() {
    let (_tmp, data, topics) = setup();
    import_on_start(&data, &topics, &LogOptions::default())
        .unwrap()
        .unwrap();
    let leftover = topic_dir(&data.join(STAGING_DIR), "t");
    std::fs::create_dir_all(&leftover).unwrap();
    assert!(
        import_on_start(&data, &topics, &LogOptions::default())
            .unwrap()
            .is_none()
    );
    assert!(!data.join(STAGING_DIR).exists());
    assert_eq!(imported(&topics), expected());
}

#[test]
fn an_existing_ferry_topic_is_a_conflict() {
    let (_tmp, data, topics) = setup();
    std::fs::create_dir_all(topic_dir(&topics, "solo")).unwrap();
    let err = import_on_start(&data, &topics, &LogOptions::default()).unwrap_err();
    assert!(matches!(err, ImportError::Conflict { ref topic, .. } if topic == "solo"));
    assert!(err.to_string().contains("nsqd.dat away"), "{err}");
    assert!(read_marker(&data).unwrap().is_none());
    assert!(!data.join(STAGING_DIR).exists());
    assert!(!topic_dir(&topics, "t").exists());
}

#[test]
fn corrupt_nsqd_data_writes_nothing() {
    let (_tmp, data, topics) = setup();
    let path = crate::nsqd_import::diskqueue::data_path(&data, "t:b", 1);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 1).unwrap();
    let err = import_on_start(&data, &topics, &LogOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("t:b.diskqueue.000001.dat"),
        "{err}"
    );
    assert!(read_marker(&data).unwrap().is_none());
    assert!(!data.join(STAGING_DIR).exists());
    assert!(std::fs::read_dir(&topics).unwrap().next().is_none());

    std::fs::write(data.join(NSQD_METADATA), b"{\"topics\": [").unwrap();
    let err = import_on_start(&data, &topics, &LogOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nsqd.dat"), "{err}");
}

#[test]
fn no_nsqd_data_means_nothing_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let topics = tmp.path().join("topics");
    assert!(
        import_on_start(tmp.path(), &topics, &LogOptions::default())
            .unwrap()
            .is_none()
    );
    assert!(read_marker(tmp.path()).unwrap().is_none());
    // Pre-1.0 metadata alone is not imported (a warning only).
    std::fs::write(tmp.path().join("nsqd.1.dat"), b"{}").unwrap();
    assert!(
        import_on_start(tmp.path(), &topics, &LogOptions::default())
            .unwrap()
            .is_none()
    );
    assert!(old_nsqd_metadata(tmp.path()).is_some());
}
