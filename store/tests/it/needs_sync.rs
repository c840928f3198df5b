//! `TopicLog::needs_sync`: an idle log has nothing to sync, so a broker with thousands of idle
//! topics does no periodic disk I/O for them.

use crate::common::{body, opts, rec};
use ferry_store::TopicLog;

#[test]
fn only_appends_and_file_changes_need_a_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    // A new log created its first segment file: the directory needs one fsync.
    log.sync().unwrap();
    assert!(!log.needs_sync(), "a synced, idle log");
    log.append(rec(&body(1, 10))).unwrap();
    assert!(log.needs_sync(), "after an append");
    log.sync().unwrap();
    assert!(!log.needs_sync(), "after its sync");
    // Rotation creates files: needed until synced.
    for i in 0..100 {
        log.append(rec(&body(i, 200))).unwrap();
    }
    assert!(log.stats().segments > 1);
    log.sync().unwrap();
    assert!(!log.needs_sync());
    drop(log);

    // Reopened as it was left: nothing to sync.
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert!(!log.needs_sync(), "a reopened idle log");
    assert!(!TopicLog::in_memory(10).needs_sync());
}
