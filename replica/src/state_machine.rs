//! openraft's state machine over an [`Apply`]: the topic log and its channels, in brokerd.
//!
//! Applying a publish appends its messages; they get the sequence numbers that follow the
//! previous publish's, on every replica alike, since every replica applies the same entries
//! in the same order from the same first sequence (the group's `first_seq`).
//!
//! A snapshot is a manifest, not the messages: the next sequence and the application's state
//! without its log (brokerd: the channels). It is taken between two applies, so it matches its
//! last log id; building it then makes the topic log durable and writes the manifest to
//! `snapshot` (synced), after which openraft may purge the Raft log below it. A replica that
//! installs one fetches the messages it lacks from the group's members (see [`Apply::install`]).
//!
//! What was applied (`applied`: last log id, membership, next sequence) is rewritten after
//! each batch of entries, atomically but without an fsync. After a crash it may lag behind the
//! topic log: openraft applies those entries again, and a publish whose messages the topic
//! already holds (its next sequence is past them) is counted, not appended twice. So a
//! publish is applied exactly once whatever the crash point, as long as the topic log keeps
//! what it was given (a killed process; for power loss, the topic's sync policy).

use std::io::{self, Cursor};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::log_store::{read_small, write_small};
use crate::{Admin, Applied, Batch, ChannelOp, Entry, Node, NodeId, StorageError, TypeConfig};

const APPLIED_FILE: &str = "applied";
/// The last snapshot built or installed: `(SnapshotMeta, SnapshotData)`, synced.
const SNAPSHOT_FILE: &str = "snapshot";
/// The group's first sequence, written (synced) when the replica is made: a member that
/// replaces a lost one starts its log there too, to replay the group's log from its start.
const FIRST_SEQ_FILE: &str = "first_seq";

/// The first sequence of the group whose replica is kept in `dir` (written by
/// [`StateMachine::open`]), if known.
pub fn group_first_seq(dir: &Path) -> io::Result<Option<u64>> {
    read_small(&dir.join(FIRST_SEQ_FILE))
}

/// What a replica's state is: brokerd's topic implements it over its log and channels.
pub trait Apply: Send + Sync + 'static {
    /// The sequence the next appended message gets.
    fn next_seq(&self) -> u64;
    /// Appends `batch`'s messages with consecutive sequences from [`Apply::next_seq`], all or
    /// none.
    fn publish(&self, batch: &Batch) -> io::Result<Range<u64>>;
    /// Applies a channel's ops (FIN, REQ, empty) made on node `origin` (the leader then; a
    /// node skips its own).
    fn channel_ops(&self, origin: u64, channel: &str, ops: &[ChannelOp]) -> io::Result<()>;
    /// Carries out an operator's action, the entry at log index `index`; whether what it
    /// names exists.
    fn admin(&self, action: &Admin, index: u64) -> io::Result<bool>;
    /// The state as bytes, without the messages (a snapshot's manifest): called between two
    /// applies, so it matches what was applied.
    fn snapshot(&self) -> io::Result<Vec<u8>>;
    /// Makes every applied message durable (before the Raft entries that carried them go).
    fn sync(&self) -> io::Result<()>;
    /// Installs a snapshot: gets the messages below `next_seq` this replica lacks from the
    /// members at `sources` (those that are gone everywhere are skipped), then replaces its
    /// state with `data`, the manifest [`Apply::snapshot`] made.
    fn install(&self, install: Install) -> BoxFuture<io::Result<()>>;
}

/// A boxed future (what [`Apply::install`] returns).
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// What a replica installs (see [`Apply::install`]).
#[derive(Debug, Clone)]
pub struct Install {
    /// The sequence the next published message gets once it is installed.
    pub next_seq: u64,
    /// The manifest.
    pub data: Vec<u8>,
    /// HTTP addresses of the group's members (the snapshot's membership).
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    /// The sequence the next published message gets.
    next_seq: u64,
}

#[derive(Clone, Serialize, Deserialize)]
struct SnapshotData {
    next_seq: u64,
    app: Vec<u8>,
}

/// A snapshot as kept in memory and in `snapshot`: its meta and its encoded [`SnapshotData`].
type CurrentSnapshot = (SnapshotMeta<NodeId, Node>, Vec<u8>);

/// The state machine of one group.
pub struct StateMachine<A: Apply> {
    dir: PathBuf,
    app: Arc<A>,
    state: AppliedState,
    /// The last snapshot built or installed, shared with the builder handles.
    current: Arc<Mutex<Option<CurrentSnapshot>>>,
    snapshots_built: u64,
}

impl<A: Apply> std::fmt::Debug for StateMachine<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("dir", &self.dir)
            .field("state", &self.state)
            .finish()
    }
}

impl<A: Apply> StateMachine<A> {
    /// Opens the state machine kept in `dir` over `app`. A new group starts at `first_seq`,
    /// which must be the same on every replica (the creator's choice).
    pub fn open(dir: &Path, app: Arc<A>, first_seq: u64) -> io::Result<StateMachine<A>> {
        std::fs::create_dir_all(dir)?;
        let first_seq = match group_first_seq(dir)? {
            Some(seq) => seq,
            None => {
                write_small(dir, FIRST_SEQ_FILE, &first_seq, true)?;
                first_seq
            }
        };
        let mut state = read_small(&dir.join(APPLIED_FILE))?.unwrap_or(AppliedState {
            next_seq: first_seq,
            ..AppliedState::default()
        });
        let current: Option<CurrentSnapshot> = read_small(&dir.join(SNAPSHOT_FILE))?;
        if let Some((meta, bytes)) = &current
            && meta.last_log_id > state.last_applied
        {
            // `applied` is written without a sync; the snapshot is synced, and the entries
            // before it may be purged: what it covers is applied.
            let data: SnapshotData = decode_snapshot(bytes)?;
            state = AppliedState {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                next_seq: data.next_seq,
            };
        }
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            app,
            state,
            current: Arc::new(Mutex::new(current)),
            snapshots_built: 0,
        })
    }

    /// The application state.
    pub fn app(&self) -> &Arc<A> {
        &self.app
    }

    fn save(&self, sync: bool) -> io::Result<()> {
        write_small(&self.dir, APPLIED_FILE, &self.state, sync)
    }

    fn publish(&mut self, batch: &Batch) -> io::Result<Applied> {
        if !batch.is_whole() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a publish entry whose lengths do not match its bodies",
            ));
        }
        let want = self.state.next_seq;
        let end = want + batch.len() as u64;
        let have = self.app.next_seq();
        if have >= end {
            // Applied before a crash that left `applied` behind.
        } else if have == want {
            let got = self.app.publish(batch)?;
            if got != (want..end) {
                return Err(io::Error::other(format!(
                    "publish got sequences {got:?}, the group expected {want}..{end}"
                )));
            }
        } else {
            return Err(io::Error::other(format!(
                "topic log at sequence {have}, the group's next publish starts at {want}"
            )));
        }
        self.state.next_seq = end;
        Ok(Applied::Published { first: want, end })
    }

    /// What a snapshot taken now holds: the manifest matching the last applied entry.
    fn manifest(&mut self) -> io::Result<CurrentSnapshot> {
        let data = postcard::to_stdvec(&SnapshotData {
            next_seq: self.state.next_seq,
            app: self.app.snapshot()?,
        })
        .map_err(io::Error::other)?;
        self.snapshots_built += 1;
        let snapshot_id = match self.state.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.snapshots_built),
            None => format!("empty-{}", self.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
            snapshot_id,
        };
        Ok((meta, data))
    }
}

/// Makes `meta` and `data` the current snapshot of the group kept in `dir`, on disk (synced)
/// first; an older one than the current is dropped (a build that an install overtook).
fn set_current(
    dir: &Path,
    current: &Mutex<Option<CurrentSnapshot>>,
    meta: SnapshotMeta<NodeId, Node>,
    data: Vec<u8>,
) -> io::Result<()> {
    let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
    if current
        .as_ref()
        .is_some_and(|(m, _)| m.last_log_id > meta.last_log_id)
    {
        return Ok(());
    }
    let snapshot = (meta, data);
    write_small(dir, SNAPSHOT_FILE, &snapshot, true)?;
    *current = Some(snapshot);
    Ok(())
}

fn decode_snapshot(bytes: &[u8]) -> io::Result<SnapshotData> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn storage_err(e: StorageIOError<NodeId>) -> StorageError {
    e.into()
}

/// openraft builds a snapshot through a handle it takes between two applies and runs on a task
/// of its own: the manifest is taken when the handle is made (so it matches its last log id);
/// the build makes the topic log durable and then saves the manifest.
pub struct Builder<A: Apply> {
    dir: PathBuf,
    app: Arc<A>,
    current: Arc<Mutex<Option<CurrentSnapshot>>>,
    manifest: io::Result<CurrentSnapshot>,
}

impl<A: Apply> std::fmt::Debug for Builder<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("dir", &self.dir).finish()
    }
}

impl<A: Apply> RaftSnapshotBuilder<TypeConfig> for Builder<A> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let fail = |e: &io::Error| storage_err(StorageIOError::write_snapshot(None, e));
        let (meta, data) = match &self.manifest {
            Ok(manifest) => manifest.clone(),
            Err(e) => return Err(fail(e)),
        };
        let app = Arc::clone(&self.app);
        tokio::task::spawn_blocking(move || app.sync())
            .await
            .map_err(|e| fail(&io::Error::other(e)))?
            .map_err(|e| fail(&e))?;
        set_current(&self.dir, &self.current, meta.clone(), data.clone()).map_err(|e| fail(&e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<A: Apply> RaftStateMachine<TypeConfig> for StateMachine<A> {
    type SnapshotBuilder = Builder<A>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let answer = match entry.payload {
                EntryPayload::Blank => Applied::Nothing,
                EntryPayload::Membership(membership) => {
                    self.state.membership = StoredMembership::new(Some(log_id), membership);
                    Applied::Nothing
                }
                EntryPayload::Normal(crate::Command::Publish { batch }) => self
                    .publish(&batch)
                    .map_err(|e| storage_err(StorageIOError::apply(log_id, &e)))?,
                EntryPayload::Normal(crate::Command::Channels {
                    origin,
                    channel,
                    ops,
                }) => {
                    self.app
                        .channel_ops(origin, &channel, &ops)
                        .map_err(|e| storage_err(StorageIOError::apply(log_id, &e)))?;
                    Applied::Nothing
                }
                EntryPayload::Normal(crate::Command::Admin(action)) => Applied::Admin {
                    found: self
                        .app
                        .admin(&action, log_id.index)
                        .map_err(|e| storage_err(StorageIOError::apply(log_id, &e)))?,
                },
            };
            self.state.last_applied = Some(log_id);
            answers.push(answer);
        }
        self.save(false)
            .map_err(|e| storage_err(StorageIOError::write_state_machine(&e)))?;
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            dir: self.dir.clone(),
            app: Arc::clone(&self.app),
            current: Arc::clone(&self.current),
            manifest: self.manifest(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let fail =
            |e: io::Error| storage_err(StorageIOError::read_snapshot(Some(meta.signature()), &e));
        let data = decode_snapshot(&bytes).map_err(fail)?;
        let sources = meta
            .last_membership
            .membership()
            .nodes()
            .map(|(_, node)| node.addr.clone())
            .collect();
        self.app
            .install(Install {
                next_seq: data.next_seq,
                data: data.app,
                sources,
            })
            .await
            .map_err(fail)?;
        self.state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            next_seq: data.next_seq,
        };
        self.save(true).map_err(fail)?;
        set_current(&self.dir, &self.current, meta.clone(), bytes).map_err(fail)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Ok(current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
