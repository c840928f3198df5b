//! A channel: one cursor into its topic's log plus the queue state that makes delivery
//! at-least-once (requeued, deferred and in-flight messages), and the clients subscribed to it.
//!
//! Invariants:
//! - All queue state lives in one [`ChannelState`] behind one short `std::sync::Mutex`
//!   (`inner`); it is never held across an `.await`.
//! - A client's `in_flight` counter only changes under that lock, together with the queue state,
//!   so a client's credit (`rdy - in_flight`) is always consistent with the channel.
//! - Consumers pull: a connection with credit takes a batch under the lock. `ready` is signalled
//!   when the log grows, a message is requeued, a deferral comes due or the channel unpauses.
//! - A publish wakes only the channels that have a consumer waiting: a waiting consumer lists
//!   its channel's signal in the topic's [`Waiting`] list *after* enabling its wake-up and
//!   *before* looking for messages; a publish appends first, then empties the list and wakes
//!   what it held. So either the consumer's look sees the new record, or the publish finds the
//!   channel listed and wakes it. Idle channels cost a publish nothing.
//! - A timer task sleeps until the channel's earliest in-flight deadline or deferral and requeues
//!   what expired; `rearm` wakes it when an earlier deadline appears. It runs only while there
//!   is a deadline: it is started (under the lock, `Inner::timer_running`) by the first one and
//!   ends when none is left, so an idle channel has no task.
//! - Observability that changes with the queue (FIN count, delivered bytes, the delivery-latency
//!   histogram, the end-to-end latency window) lives in `Inner` too: the message path updates
//!   plain integers under the lock it already holds, and `/metrics` and `/stats` read them with
//!   one short acquisition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use ferry_store::{ChannelError, ChannelSnapshot, ChannelState, Delivery, Peek, TopicLog};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::ClientInfo;
use crate::clock::now_ns;
use crate::dead_letter::{self, DeadLetterTx};
use crate::histogram::Histogram;
use crate::latency::{E2eConfig, E2eWindow};
use crate::settings::{ChannelLimits, ChannelSettings, Defaults};
use crate::stats::Latency;

/// Why FIN/REQ/TOUCH failed, in NSQ's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageOpError {
    /// Unknown id, or not in flight any more (timed out, already FINed).
    #[error("ID not in flight")]
    NotInFlight,
    /// In flight to another client.
    #[error("client does not own message")]
    NotOwner,
}

impl From<ChannelError> for MessageOpError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::NotInFlight => MessageOpError::NotInFlight,
            ChannelError::NotOwner => MessageOpError::NotOwner,
        }
    }
}

struct Inner {
    queue: ChannelState,
    clients: HashMap<u64, Arc<ClientInfo>>,
    /// When the timer task will next wake (i64::MAX: idle).
    armed_at: i64,
    /// A timer task runs (it clears this, under the lock, when it ends).
    timer_running: bool,
    /// FINs.
    finished: u64,
    /// Body bytes of first deliveries.
    delivered_bytes: u64,
    /// Publish (or deliver-at, if later) to first delivery.
    delivery_latency: Histogram,
    /// Publish to FIN, when `--e2e-processing-latency-percentile` is set.
    e2e: Option<E2eWindow>,
}

/// A channel of a topic.
pub struct Channel {
    name: String,
    topic_name: String,
    ephemeral: bool,
    log: Arc<TopicLog>,
    topic_paused: Arc<AtomicBool>,
    /// The topic's "this replica delivers" flag: always set for a single-broker topic; for a
    /// replicated one only while this broker leads its group.
    leading: Arc<AtomicBool>,
    paused: AtomicBool,
    inner: Mutex<Inner>,
    ready: Arc<ReadySignal>,
    waiting: Arc<Waiting>,
    /// The topic's "sync has channel work" flag (journal ops to write, segments to delete).
    dirty: Arc<AtomicBool>,
    /// The broker's defaults of the channel settings.
    defaults: Defaults,
    /// The channel's own settings (persisted) and what is in effect.
    settings: Mutex<(ChannelSettings, ChannelLimits)>,
    /// To the broker's dead-letter task.
    dead_letters: DeadLetterTx,
    rearm: Notify,
    /// This channel (for the timer task it starts).
    me: Weak<Channel>,
    tracker: TaskTracker,
    e2e_config: Option<E2eConfig>,
    /// Cancelled when the channel is deleted or the broker stops.
    pub(crate) cancel: CancellationToken,
    /// Messages delivered for the first time.
    pub message_count: AtomicU64,
    /// Explicit REQs.
    pub requeue_count: AtomicU64,
    /// In-flight timeouts.
    pub timeout_count: AtomicU64,
    /// Last time (ns) a message was delivered; for stats.
    pub last_delivery_ns: AtomicI64,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("topic", &self.topic_name)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Channel {
    pub(crate) fn new(
        topic_name: &str,
        name: &str,
        topic: TopicLink,
        queue: ChannelState,
        paused: bool,
        cancel: CancellationToken,
    ) -> Self {
        let TopicLink {
            log,
            paused: topic_paused,
            leading,
            waiting,
            dirty,
            tracker,
            defaults,
            dead_letters,
        } = topic;
        let limits = ChannelLimits::effective(topic_name, &ChannelSettings::default(), &defaults);
        let mut queue = queue;
        queue.set_limits(
            limits.max_age.as_nanos().min(i64::MAX as u128) as i64,
            limits.max_attempts,
        );
        Channel {
            name: name.to_owned(),
            topic_name: topic_name.to_owned(),
            ephemeral: ferry_proto::names::is_ephemeral(name),
            log,
            topic_paused,
            leading,
            paused: AtomicBool::new(paused),
            inner: Mutex::new(Inner {
                queue,
                clients: HashMap::new(),
                armed_at: i64::MAX,
                timer_running: false,
                finished: 0,
                delivered_bytes: 0,
                delivery_latency: Histogram::default(),
                e2e: None,
            }),
            ready: Arc::default(),
            waiting,
            dirty,
            defaults,
            settings: Mutex::new((ChannelSettings::default(), limits)),
            dead_letters,
            rearm: Notify::new(),
            me: Weak::new(),
            tracker,
            e2e_config: None,
            cancel,
            message_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            timeout_count: AtomicU64::new(0),
            last_delivery_ns: AtomicI64::new(0),
        }
    }

    /// Gives the channel its own handle (from `Arc::new_cyclic`), which its timer task holds.
    pub(crate) fn with_handle(mut self, me: Weak<Channel>) -> Self {
        self.me = me;
        self
    }

    /// Turns on end-to-end latency tracking (before the channel is shared).
    pub(crate) fn with_e2e(mut self, cfg: Option<&E2eConfig>) -> Self {
        if let Some(cfg) = cfg {
            let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
            inner.e2e = Some(E2eWindow::new(cfg, now_ns()));
            self.e2e_config = Some(cfg.clone());
        }
        self
    }

    /// Channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its topic's name.
    pub fn topic_name(&self) -> &str {
        &self.topic_name
    }

    /// The channel's own settings (what is persisted; unset ones follow the broker).
    pub fn settings(&self) -> ChannelSettings {
        self.settings_lock().0.clone()
    }

    /// The settings in effect (own settings over the broker's defaults).
    pub fn limits(&self) -> ChannelLimits {
        self.settings_lock().1.clone()
    }

    fn settings_lock(&self) -> MutexGuard<'_, (ChannelSettings, ChannelLimits)> {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the channel's own settings; they apply from the next delivery, REQ or timeout.
    /// The caller persists them.
    pub(crate) fn set_settings(&self, settings: ChannelSettings) {
        let limits = ChannelLimits::effective(&self.topic_name, &settings, &self.defaults);
        let (max_age, max_attempts) = (
            limits.max_age.as_nanos().min(i64::MAX as u128) as i64,
            limits.max_attempts,
        );
        *self.settings_lock() = (settings, limits);
        self.lock().queue.set_limits(max_age, max_attempts);
        self.notify_ready();
    }

    /// Applies the queue ops its group's leader made (a replicated topic's follower: its
    /// channels deliver nothing, so their state is only what the leader did), replayed over
    /// the channel's snapshot as after a restart. The caller compacts the topic's metadata.
    pub(crate) fn apply_replicated_ops(&self, ops: &[ferry_store::JournalOp]) {
        let mut inner = self.lock();
        let replayed = ferry_store::replay(inner.queue.snapshot(), ops, &self.log);
        inner.queue = self.restored(replayed);
    }

    /// Replaces the channel's state, paused flag and settings by a replicated topic's
    /// snapshot's (a follower installing it). The caller compacts the topic's metadata.
    pub(crate) fn install_replicated(&self, meta: ferry_store::ChannelMeta) {
        self.set_settings(meta.settings);
        self.set_paused(meta.paused);
        let state = self.restored(meta.state);
        self.lock().queue = state;
    }

    /// `snapshot` restored over the log with the channel's limits, journaling on if durable.
    fn restored(&self, snapshot: ChannelSnapshot) -> ChannelState {
        let limits = self.limits();
        let mut state = ChannelState::restore(snapshot, &self.log);
        state.set_limits(
            limits.max_age.as_nanos().min(i64::MAX as u128) as i64,
            limits.max_attempts,
        );
        if !self.ephemeral {
            state.enable_journal();
        }
        state
    }

    /// True for `#ephemeral` channels.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Paused flag of the channel itself.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug in ChannelState; the state it guards is
        // still structurally valid (no half-applied unsafe), so keep serving rather than cascade.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that the queue state changed (after the change, so that the topic's sync, which
    /// clears the flag before it drains the journal ops, never misses it). Idle channels never
    /// set it, so an idle topic's sync does no I/O.
    fn changed(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Release);
        }
    }

    fn flowing(&self) -> bool {
        !self.paused.load(Ordering::Acquire)
            && !self.topic_paused.load(Ordering::Acquire)
            && self.leading.load(Ordering::Acquire)
    }

    /// Wakes the timer task if the queue's next wake-up is earlier than the one it sleeps for,
    /// or starts it if none runs.
    fn rearm_if_earlier(&self, inner: &mut Inner) {
        if let Some(at) = inner.queue.next_wakeup()
            && at < inner.armed_at
        {
            inner.armed_at = at;
            if inner.timer_running {
                self.rearm.notify_one();
            } else {
                self.start_timer(inner);
            }
        }
    }

    /// Starts the timer task (the caller holds the lock and checked none runs).
    fn start_timer(&self, inner: &mut Inner) {
        let (Some(me), Ok(runtime)) = (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return; // being dropped, or no runtime (then nothing could run the timer anyway)
        };
        inner.timer_running = true;
        self.tracker.spawn_on(me.run_timer(), &runtime);
    }

    /// Starts the timer if the (restored) queue has deadlines. Called once the channel is in
    /// its topic's map.
    pub(crate) fn start(&self) {
        let mut inner = self.lock();
        if !inner.timer_running && inner.queue.next_wakeup().is_some() {
            inner.armed_at = i64::MIN; // the task computes the real time
            self.start_timer(&mut inner);
        }
    }

    /// Counts DPUB records at the cursor as deferred (see `ChannelState::absorb_deferred`),
    /// re-arming the timer for them.
    fn absorb_deferred(&self, inner: &mut MutexGuard<'_, Inner>) {
        match inner.queue.absorb_deferred(&self.log, now_ns()) {
            Ok(0) => {}
            Ok(_) => self.rearm_if_earlier(inner),
            Err(e) => tracing::warn!(channel = %self.name, error = %e, "cannot read the log"),
        }
    }

    /// Wakes consumers waiting for messages (new messages, requeue, unpause).
    pub fn notify_ready(&self) {
        self.ready.notify.notify_waiters();
    }

    /// Resolves once something may be deliverable. Spurious wake-ups are allowed; the caller
    /// then finds nothing in [`Channel::take`] and waits again.
    pub async fn ready(&self) {
        loop {
            let notified = self.ready.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.waiting.list(&self.ready);
            if self.flowing() {
                let mut inner = self.lock();
                if inner.queue.has_ready(&self.log, now_ns()) {
                    return;
                }
                // Looking may have moved not-yet-due (DPUB) records to the deferred heap.
                self.rearm_if_earlier(&mut inner);
            }
            notified.await;
        }
    }

    /// Takes up to `max` messages for `client` (marking them in flight with `msg_timeout`).
    /// Messages skipped by the client's `sample_rate` are consumed and not returned.
    pub fn take(
        &self,
        client: &ClientInfo,
        max: usize,
        msg_timeout: Duration,
        sample_rate: i32,
    ) -> Result<Vec<Delivery>, ferry_store::StoreError> {
        if max == 0 || !self.flowing() {
            return Ok(Vec::new());
        }
        let now = now_ns();
        let deadline = now.saturating_add(msg_timeout.as_nanos() as i64);
        let mut out = Vec::with_capacity(max.min(64));
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut first = 0u64;
        while out.len() < max {
            let Some(d) = inner.queue.next(&self.log, now, client.id, deadline)? else {
                break;
            };
            if d.attempts == 1 {
                first += 1;
                inner.delivered_bytes += d.record.body.len() as u64;
                let since = d.record.timestamp_ns.max(d.record.deliver_at_ns);
                inner
                    .delivery_latency
                    .record_ns(now.saturating_sub(since).max(0) as u64);
            }
            if sample_rate > 0 && rand::random_range(0..100) > sample_rate {
                // Not sampled for this client: consumed for the channel, as nsqd does.
                let _ = inner.queue.finish(d.record.seq, client.id);
                continue;
            }
            out.push(d);
        }
        if first > 0 {
            self.message_count.fetch_add(first, Ordering::Relaxed);
        }
        if !out.is_empty() {
            client
                .in_flight
                .fetch_add(out.len() as u64, Ordering::AcqRel);
            client
                .message_count
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            self.last_delivery_ns.store(now, Ordering::Relaxed);
        }
        self.rearm_if_earlier(inner);
        // Expired requeued messages are journaled as done.
        let journaled = inner.queue.has_journal_ops();
        drop(guard);
        if !out.is_empty() || first > 0 || journaled {
            self.changed();
        }
        Ok(out)
    }

    /// FIN.
    pub fn finish(&self, client: &ClientInfo, seq: u64) -> Result<(), MessageOpError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let published = match inner.e2e {
            Some(_) => inner.queue.published_at(seq),
            None => None,
        };
        inner.queue.finish(seq, client.id)?;
        inner.finished += 1;
        if let (Some(window), Some(published)) = (inner.e2e.as_mut(), published) {
            window.record(published, now_ns());
        }
        client.in_flight.fetch_sub(1, Ordering::AcqRel);
        client.finish_count.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        self.changed();
        Ok(())
    }

    /// REQ with `delay` (zero: back to the queue at once).
    pub fn requeue(
        &self,
        client: &ClientInfo,
        seq: u64,
        delay: Duration,
    ) -> Result<(), MessageOpError> {
        let now = now_ns();
        let at = now.saturating_add(delay.as_nanos() as i64);
        {
            let mut inner = self.lock();
            inner.queue.requeue(seq, client.id, at, now)?;
            client.in_flight.fetch_sub(1, Ordering::AcqRel);
            client.requeue_count.fetch_add(1, Ordering::Relaxed);
            self.requeue_count.fetch_add(1, Ordering::Relaxed);
            self.ship_dead_letters(&mut inner);
            if delay.is_zero() {
                drop(inner);
                self.notify_ready();
            } else {
                self.rearm_if_earlier(&mut inner);
            }
        }
        self.changed();
        Ok(())
    }

    /// TOUCH: extends the deadline to now + `msg_timeout`, never past the delivery time +
    /// `max_msg_timeout`.
    pub fn touch(
        &self,
        client: &ClientInfo,
        seq: u64,
        msg_timeout: Duration,
        max_msg_timeout: Duration,
    ) -> Result<(), MessageOpError> {
        let mut inner = self.lock();
        let delivered = inner
            .queue
            .delivered_at(seq)
            .ok_or(MessageOpError::NotInFlight)?;
        let cap = delivered.saturating_add(max_msg_timeout.as_nanos() as i64);
        let deadline = now_ns()
            .saturating_add(msg_timeout.as_nanos() as i64)
            .min(cap);
        inner.queue.touch(seq, client.id, deadline)?;
        drop(inner);
        self.changed();
        Ok(())
    }

    /// Adds a subscriber. Fails when `max_consumers` (non-zero) is reached.
    pub fn add_client(&self, client: Arc<ClientInfo>, max_consumers: usize) -> bool {
        let mut inner = self.lock();
        if max_consumers > 0 && inner.clients.len() >= max_consumers {
            return false;
        }
        inner.clients.insert(client.id, client);
        true
    }

    /// Removes a subscriber and requeues its in-flight messages at once. Returns how many
    /// clients remain.
    pub fn remove_client(&self, client: &ClientInfo) -> usize {
        let (remaining, requeued) = {
            let mut inner = self.lock();
            inner.clients.remove(&client.id);
            let n = inner.queue.requeue_owner(client.id);
            client.in_flight.store(0, Ordering::Release);
            self.ship_dead_letters(&mut inner);
            (inner.clients.len(), n)
        };
        if requeued > 0 {
            self.changed();
            self.notify_ready();
        }
        remaining
    }

    /// Number of subscribers.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// Pause or unpause delivery.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            self.notify_ready();
        }
    }

    /// Drops every queued, deferred and in-flight message (clients' in-flight counts reset).
    pub fn empty(&self) {
        let mut inner = self.lock();
        inner.queue.empty(&self.log);
        for c in inner.clients.values() {
            c.in_flight.store(0, Ordering::Release);
            c.wake.notify_one();
        }
        drop(inner);
        self.changed();
    }

    /// Snapshot of the queue for persistence.
    pub fn snapshot(&self) -> ChannelSnapshot {
        self.lock().queue.snapshot()
    }

    /// Snapshot of the queue for a compaction of the topic's metadata: the ops pending for the
    /// journal are dropped in the same lock (the snapshot includes them).
    pub(crate) fn snapshot_for_compaction(&self) -> ChannelSnapshot {
        self.lock().queue.snapshot_for_compaction()
    }

    /// The ops recorded for the topic's journal since the last call, in order.
    pub(crate) fn take_journal_ops(&self) -> Vec<ferry_store::JournalOp> {
        self.lock().queue.take_journal_ops()
    }

    /// Smallest sequence this channel still needs.
    pub fn low_water(&self) -> u64 {
        self.lock().queue.low_water()
    }

    /// Counts for `/stats`: (depth, in_flight, deferred, clients).
    pub fn counts(&self) -> ChannelCounts {
        let mut inner = self.lock();
        self.absorb_deferred(&mut inner);
        self.expire_head(&mut inner);
        ChannelCounts {
            depth: inner.queue.depth(&self.log),
            in_flight: inner.queue.in_flight_count() as u64,
            deferred: inner.queue.deferred_count() as u64,
            clients: inner.clients.values().cloned().collect(),
            expired: inner.queue.expired_count(),
            dead_lettered: inner.queue.dead_lettered_count(),
        }
    }

    /// Drops the messages at the head that are past `max_age` (as delivery would), so that
    /// depth counts only deliverable messages.
    fn expire_head(&self, inner: &mut MutexGuard<'_, Inner>) {
        match inner.queue.expire_head(&self.log, now_ns()) {
            Ok(0) => {}
            Ok(_) => self.changed(),
            Err(e) => tracing::warn!(channel = %self.name, error = %e, "cannot read the log"),
        }
    }

    /// Hands the messages the queue dead-lettered to the broker's dead-letter task (under the
    /// channel's lock, right after the change that made them).
    fn ship_dead_letters(&self, inner: &mut Inner) {
        let letters = inner.queue.take_dead_letters();
        if letters.is_empty() {
            return;
        }
        let target = self.settings_lock().1.dead_letter_topic.clone();
        let me = self.me.upgrade();
        for letter in letters {
            let seq = letter.record.seq;
            let sent = match (&target, &me) {
                (Some(target), Some(me)) => self
                    .dead_letters
                    .send(dead_letter::Job {
                        channel: me.clone(),
                        target: target.clone(),
                        letter,
                    })
                    .is_ok(),
                _ => false,
            };
            if !sent {
                let retry = now_ns() + dead_letter::RETRY_AFTER.as_nanos() as i64;
                inner.queue.dead_letter_failed(seq, retry);
                self.rearm_if_earlier(inner);
            }
        }
    }

    /// The dead letter `seq` is in the dead-letter topic: the channel drops it.
    pub(crate) fn dead_letter_done(&self, seq: u64) {
        let done = self.lock().queue.dead_letter_done(seq);
        if done {
            self.changed();
        }
    }

    /// The dead letter `seq` could not be published: deferred until `retry_at_ns`.
    pub(crate) fn dead_letter_failed(&self, seq: u64, retry_at_ns: i64) {
        let mut inner = self.lock();
        inner.queue.dead_letter_failed(seq, retry_at_ns);
        self.rearm_if_earlier(&mut inner);
        drop(inner);
        self.changed();
    }

    /// Moves the cursor to `to` (see `ChannelState::rewind`): the clients whose in-flight
    /// messages at or after it were dropped get their credit back. The caller persists the
    /// channel (a compaction). Returns the messages the channel now owes.
    pub(crate) fn rewind(&self, to: u64) -> u64 {
        let mut inner = self.lock();
        let rewound = inner.queue.rewind(to);
        for (_, owner) in &rewound.dropped_in_flight {
            if let Some(c) = inner.clients.get(owner) {
                c.in_flight.fetch_sub(1, Ordering::AcqRel);
                c.wake.notify_one();
            }
        }
        self.absorb_deferred(&mut inner);
        let owed = inner.queue.depth(&self.log)
            + inner.queue.in_flight_count() as u64
            + inner.queue.deferred_count() as u64;
        drop(inner);
        self.changed();
        self.notify_ready();
        owed
    }

    /// What the channel holds, changing nothing: up to `n` messages it would deliver next, in
    /// flight and deferred.
    pub fn peek(&self, n: usize) -> Result<Peek, ferry_store::StoreError> {
        self.lock().queue.peek(&self.log, now_ns(), n)
    }

    /// What `/metrics` reads, in one lock acquisition.
    pub fn metrics(&self) -> ChannelMetrics {
        let mut inner = self.lock();
        self.absorb_deferred(&mut inner);
        self.expire_head(&mut inner);
        ChannelMetrics {
            depth: inner.queue.depth(&self.log),
            in_flight: inner.queue.in_flight_count() as u64,
            deferred: inner.queue.deferred_count() as u64,
            clients: inner.clients.len() as u64,
            finished: inner.finished,
            expired: inner.queue.expired_count(),
            dead_lettered: inner.queue.dead_lettered_count(),
            delivered_bytes: inner.delivered_bytes,
            delivery_latency: inner.delivery_latency.clone(),
        }
    }

    /// Adds this channel's end-to-end latency window to `into` (for the topic's figures); does
    /// nothing when tracking is off.
    pub fn merge_e2e_into(&self, into: &mut hdrhistogram::Histogram<u64>) {
        if let Some(w) = self.lock().e2e.as_mut() {
            w.merge_into(now_ns(), into);
        }
    }

    /// The `/stats` end-to-end latency summary (count 0 and no percentiles when off, as nsqd).
    pub fn e2e_latency(&self) -> Latency {
        let Some(cfg) = &self.e2e_config else {
            return Latency::default();
        };
        let mut merged = E2eConfig::empty_histogram();
        self.merge_e2e_into(&mut merged);
        cfg.summarize(&merged)
    }

    /// The timer loop: requeues timed-out messages and wakes consumers when deferrals come due;
    /// ends when no deadline is left.
    async fn run_timer(self: Arc<Self>) {
        loop {
            let wake_at = {
                let mut inner = self.lock();
                let at = inner.queue.next_wakeup().unwrap_or(i64::MAX);
                inner.armed_at = at;
                if at == i64::MAX {
                    inner.timer_running = false;
                    return;
                }
                at
            };
            let rearm = self.rearm.notified();
            tokio::pin!(rearm);
            rearm.as_mut().enable();
            let delta = wake_at.saturating_sub(now_ns()).max(0) as u64;
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    self.lock().timer_running = false;
                    return;
                }
                _ = &mut rearm => continue,
                _ = tokio::time::sleep(Duration::from_nanos(delta)) => {}
            }
            self.expire();
        }
    }

    /// Requeues in-flight messages past their deadline; wakes consumers if anything is due.
    pub(crate) fn expire(&self) {
        let now = now_ns();
        let due = {
            let mut inner = self.lock();
            let expired = inner.queue.take_timed_out(now);
            for (_, owner) in &expired {
                if let Some(c) = inner.clients.get(owner) {
                    c.in_flight.fetch_sub(1, Ordering::AcqRel);
                    c.wake.notify_one();
                }
            }
            self.timeout_count
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            self.ship_dead_letters(&mut inner);
            if !expired.is_empty() {
                self.changed();
            }
            inner.queue.has_ready(&self.log, now)
        };
        if due {
            self.notify_ready();
        }
    }
}

/// What a channel shares with its topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicLink {
    /// The topic's log.
    pub log: Arc<TopicLog>,
    /// The topic's paused flag.
    pub paused: Arc<AtomicBool>,
    /// The topic's "this replica delivers" flag.
    pub leading: Arc<AtomicBool>,
    /// The topic's list of channels with a consumer waiting.
    pub waiting: Arc<Waiting>,
    /// Set when a channel's queue state changed since the topic's last sync (which then writes
    /// the channels' journal ops and deletes segments nobody needs).
    pub dirty: Arc<AtomicBool>,
    /// The broker's task tracker (timer tasks).
    pub tracker: TaskTracker,
    /// The broker's defaults of the channel settings.
    pub defaults: Defaults,
    /// To the broker's dead-letter task.
    pub dead_letters: DeadLetterTx,
}

/// How a waiting consumer is woken: the channel's `Notify`, and whether it is in its topic's
/// [`Waiting`] list.
#[derive(Debug, Default)]
struct ReadySignal {
    notify: Notify,
    listed: AtomicBool,
}

/// The channels of one topic that have a consumer waiting for new messages.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    /// Held only to push or take the list.
    signals: Mutex<Vec<Arc<ReadySignal>>>,
}

impl Waiting {
    fn signals(&self) -> MutexGuard<'_, Vec<Arc<ReadySignal>>> {
        self.signals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists `signal` unless it is listed already.
    fn list(&self, signal: &Arc<ReadySignal>) {
        if !signal.listed.swap(true, Ordering::SeqCst) {
            self.signals().push(signal.clone());
        }
    }

    /// Wakes every listed channel and empties the list (after the log grew).
    pub(crate) fn wake_all(&self) {
        let listed = {
            let mut signals = self.signals();
            if signals.is_empty() {
                return;
            }
            std::mem::take(&mut *signals)
        };
        for signal in listed {
            // Unlisted before the wake-up: a consumer that starts waiting after this lists
            // itself again, one woken by it looks at the log that already grew.
            signal.listed.store(false, Ordering::SeqCst);
            signal.notify.notify_waiters();
        }
    }
}

/// Point-in-time figures of a channel for `/metrics`.
#[derive(Debug, Clone)]
pub struct ChannelMetrics {
    /// Messages waiting (not in flight, not deferred).
    pub depth: u64,
    /// In flight.
    pub in_flight: u64,
    /// Deferred.
    pub deferred: u64,
    /// Subscribed clients.
    pub clients: u64,
    /// FINs since start.
    pub finished: u64,
    /// Messages dropped for their age since start.
    pub expired: u64,
    /// Messages sent to the dead-letter topic since start.
    pub dead_lettered: u64,
    /// Body bytes of first deliveries since start.
    pub delivered_bytes: u64,
    /// Publish to first delivery.
    pub delivery_latency: Histogram,
}

/// Point-in-time counts of a channel.
#[derive(Debug)]
pub struct ChannelCounts {
    /// Messages waiting (not in flight, not deferred).
    pub depth: u64,
    /// In flight.
    pub in_flight: u64,
    /// Deferred.
    pub deferred: u64,
    /// Subscribed clients.
    pub clients: Vec<Arc<ClientInfo>>,
    /// Messages dropped for their age since start.
    pub expired: u64,
    /// Messages sent to the dead-letter topic since start.
    pub dead_lettered: u64,
}
