//! `ferry to-file`: archive topics to files, as nsq_to_file.
//!
//! One file per topic at a time, written under a temporary name (`<name>.tmp` in
//! `--work-dir`) and given its final name in `--output-dir` when it is rotated or closed, so a
//! reader of the output directory never sees a partial file. A final name is never reused:
//! `<REV>` grows (`-1`, `-2`...) past any file that exists, from an earlier run too.
//!
//! # Durability
//!
//! A message is FINed only once the file holding it was flushed and fsynced: messages are
//! held, and each sync (every `--sync-interval`, when a topic holds `--max-in-flight`
//! messages, at rotation and at shutdown) FINs what it covers; so `--max-in-flight` bounds what
//! is held. With `--gzip` each sync ends a gzip member (as nsq_to_file does): a file is a
//! valid multi-member gzip stream, and what a sync covered stays readable even if the process
//! dies before the file is closed. A `.tmp` file left by a crash is given its final name at the
//! next start (its last member may be torn; the messages in it were not FINed and come again).
//! So one work directory serves one `ferry to-file` per topic at a time.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Args;
use ferry_client::Message;
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::file_name::{self, NameFormat};
use super::{FeedArgs, Progress, Subscription};
use crate::args::{parse_duration, parse_positive_duration};

/// Suffix of files being written.
const TMP_SUFFIX: &str = ".tmp";

/// Flags of `ferry to-file`.
#[derive(Debug, Clone, Args)]
pub struct ToFileArgs {
    /// Topics, channel and brokers to consume.
    #[command(flatten)]
    pub feed: FeedArgs,

    /// Directory of the finished files.
    #[arg(long, default_value = "/tmp", value_name = "DIR")]
    pub output_dir: PathBuf,

    /// Directory of the files being written (default: --output-dir; must be on the same
    /// filesystem).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// File name, with the tokens <TOPIC>, <HOST>, <PID>, <DATETIME> and <REV>.
    #[arg(long, default_value = file_name::DEFAULT_FORMAT)]
    pub filename_format: String,

    /// strftime format of <DATETIME> (UTC).
    #[arg(long, default_value = file_name::DEFAULT_DATETIME_FORMAT)]
    pub datetime_format: String,

    /// Compress files with gzip (`.gz` is added to the name).
    #[arg(long)]
    pub gzip: bool,

    /// gzip compression level (1-9).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,

    /// Rotate a file once this many bytes of messages were written to it (before
    /// compression); 0: never.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub rotate_size: u64,

    /// Rotate a file this long after it was opened; 0: never.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub rotate_interval: Duration,

    /// Flush and fsync files (and FIN the messages written) this often.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub sync_interval: Duration,
}

/// What a file receives: plain bytes or a gzip member.
enum Sink {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl Sink {
    fn write_line(&mut self, body: &[u8]) -> io::Result<()> {
        let w: &mut dyn io::Write = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w,
        };
        w.write_all(body)?;
        w.write_all(b"\n")
    }

    /// Ends the gzip member, flushes and fsyncs; returns the buffered file.
    fn finish(self) -> io::Result<BufWriter<File>> {
        let mut w = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(gz) => gz.finish()?,
        };
        w.flush()?;
        w.get_ref().sync_data()?;
        Ok(w)
    }
}

/// The file a topic is being written to.
struct OpenFile {
    /// `None` only while a sync swaps it.
    sink: Option<Sink>,
    tmp: PathBuf,
    /// Name with `<REV>` still in it (a new base name means a new file).
    base: String,
    rev: u32,
    opened: Instant,
    /// Bytes of messages written (before compression).
    size: u64,
    /// Written, not yet covered by a sync, hence not FINed.
    held: Vec<Message>,
}

/// One topic's output.
struct TopicOut {
    topic: String,
    file: Option<OpenFile>,
    /// Base name and revision of the latest file: the next file of that base name starts
    /// looking for a free name after it.
    last: Option<(String, u32)>,
}

/// Every topic's output; owned by the one task that runs the feed.
struct FileFeed {
    args: ToFileArgs,
    work_dir: PathBuf,
    format: NameFormat,
    outs: Vec<TopicOut>,
    progress: Arc<Progress>,
}

/// Runs `ferry to-file` until `shutdown`, then closes every file and FINs what they hold.
///
/// File I/O runs in `block_in_place`: call it on a multi-thread runtime.
pub async fn run(args: &ToFileArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let format = NameFormat::new(&args.filename_format, &args.datetime_format, args.gzip)?;
    if !format.has_rev() && (args.rotate_size > 0 || !args.rotate_interval.is_zero()) {
        anyhow::bail!(
            "--filename-format must contain <REV> with --rotate-size or --rotate-interval"
        );
    }
    let work_dir = args.work_dir.clone().unwrap_or(args.output_dir.clone());
    for dir in [&args.output_dir, &work_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    recover_leftovers(&work_dir, &args.output_dir, &args.feed.topic, &format)?;
    let progress_stop = CancellationToken::new();
    let progress = Progress::start("to-file", progress_stop.clone());
    let mut sub = Subscription::start(&args.feed, "nsq_to_file", "to-file").await?;
    let mut feed = FileFeed {
        args: args.clone(),
        work_dir,
        format,
        outs: args
            .feed
            .topic
            .iter()
            .map(|t| TopicOut {
                topic: t.clone(),
                file: None,
                last: None,
            })
            .collect(),
        progress: progress.clone(),
    };
    let result = feed.run(&mut sub.messages, &shutdown).await;
    let closed = match &result {
        Ok(()) => feed.close_all().await,
        Err(_) => {
            feed.requeue_all().await;
            Ok(())
        }
    };
    sub.stop().await;
    progress_stop.cancel();
    eprintln!("{}", progress.summary());
    result.and(closed)
}

impl FileFeed {
    async fn run(
        &mut self,
        messages: &mut mpsc::Receiver<(usize, Message)>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let start = tokio::time::Instant::now() + self.args.sync_interval;
        let mut tick = tokio::time::interval_at(start, self.args.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => self.on_tick().await?,
                next = messages.recv() => match next {
                    Some((i, msg)) => self.write(i, msg).await?,
                    None => anyhow::bail!("the consumers stopped"),
                },
            }
        }
    }

    /// Writes `msg` to its topic's file (rotating first if due); syncs once the topic holds
    /// `--max-in-flight` messages.
    async fn write(&mut self, i: usize, msg: Message) -> anyhow::Result<()> {
        let now = SystemTime::now();
        let base = self.format.base(&self.outs[i].topic, now);
        if let Some(file) = &self.outs[i].file
            && self.needs_rotation(file, &base)
        {
            self.close(i).await?;
        }
        if self.outs[i].file.is_none() {
            let first_rev = match &self.outs[i].last {
                Some((last, rev)) if *last == base => rev + 1,
                _ => 0,
            };
            let file = self.open(&base, first_rev)?;
            self.outs[i].last = Some((base, file.rev));
            self.outs[i].file = Some(file);
        }
        let Some(file) = self.outs[i].file.as_mut() else {
            unreachable!("opened above")
        };
        let Some(sink) = file.sink.as_mut() else {
            unreachable!("a sink is only taken during a sync")
        };
        if let Err(err) = sink.write_line(msg.body()) {
            let _ = msg.requeue_without_backoff(Some(Duration::ZERO)).await;
            return Err(
                anyhow::Error::new(err).context(format!("cannot write {}", file.tmp.display()))
            );
        }
        file.size += msg.body().len() as u64 + 1;
        file.held.push(msg);
        if file.held.len() as u64 >= self.args.feed.consumer.max_in_flight {
            self.sync(i).await?;
        }
        Ok(())
    }

    fn needs_rotation(&self, file: &OpenFile, base: &str) -> bool {
        (self.args.rotate_size > 0 && file.size >= self.args.rotate_size)
            || self.interval_passed(file)
            || file.base != base
    }

    fn interval_passed(&self, file: &OpenFile) -> bool {
        !self.args.rotate_interval.is_zero() && file.opened.elapsed() >= self.args.rotate_interval
    }

    /// Every `--sync-interval`: close files whose `--rotate-interval` passed, sync the others.
    async fn on_tick(&mut self) -> anyhow::Result<()> {
        for i in 0..self.outs.len() {
            match &self.outs[i].file {
                Some(file) if self.interval_passed(file) => self.close(i).await?,
                Some(file) if !file.held.is_empty() => self.sync(i).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates the working file of the first free name at `base` from revision `rev`.
    fn open(&self, base: &str, mut rev: u32) -> anyhow::Result<OpenFile> {
        loop {
            let name = file_name::with_rev(base, rev);
            let tmp = self.work_dir.join(format!("{name}{TMP_SUFFIX}"));
            if !self.args.output_dir.join(&name).exists() {
                match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                    Ok(f) => {
                        let w = BufWriter::with_capacity(64 * 1024, f);
                        return Ok(OpenFile {
                            sink: Some(self.sink(w)),
                            tmp,
                            base: base.to_owned(),
                            rev,
                            opened: Instant::now(),
                            size: 0,
                            held: Vec::new(),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("cannot create {}", tmp.display())));
                    }
                }
            }
            if !self.format.has_rev() {
                anyhow::bail!(
                    "{} exists and --filename-format has no <REV>",
                    self.args.output_dir.join(&name).display()
                );
            }
            rev += 1;
        }
    }

    fn sink(&self, w: BufWriter<File>) -> Sink {
        if self.args.gzip {
            Sink::Gzip(GzEncoder::new(w, Compression::new(self.args.gzip_level)))
        } else {
            Sink::Plain(w)
        }
    }

    /// Flushes and fsyncs topic `i`'s file (a new gzip member follows), then FINs what it held.
    async fn sync(&mut self, i: usize) -> anyhow::Result<()> {
        let gzip = self.args.gzip;
        let level = self.args.gzip_level;
        let Some(file) = self.outs[i].file.as_mut() else {
            return Ok(());
        };
        let Some(sink) = file.sink.take() else {
            return Ok(());
        };
        let synced = tokio::task::block_in_place(|| sink.finish());
        match synced {
            Ok(w) => {
                file.sink = Some(if gzip {
                    Sink::Gzip(GzEncoder::new(w, Compression::new(level)))
                } else {
                    Sink::Plain(w)
                });
                let held = std::mem::take(&mut file.held);
                self.fin(held).await;
                Ok(())
            }
            Err(err) => {
                let context = format!("cannot sync {}", file.tmp.display());
                let file = self.outs[i].file.take();
                requeue(file.map(|f| f.held).unwrap_or_default()).await;
                Err(anyhow::Error::new(err).context(context))
            }
        }
    }

    /// Syncs topic `i`'s file, gives it its final name and FINs what it held.
    async fn close(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(mut file) = self.outs[i].file.take() else {
            return Ok(());
        };
        let Some(sink) = file.sink.take() else {
            return Ok(());
        };
        let output_dir = self.args.output_dir.clone();
        let closed = tokio::task::block_in_place(|| {
            sink.finish()?;
            publish(
                &file.tmp,
                &output_dir,
                &file.base,
                file.rev,
                self.format.has_rev(),
            )
        });
        match closed {
            Ok((path, rev)) => {
                if let Some(last) = &mut self.outs[i].last {
                    // A later revision if its name was taken meanwhile.
                    last.1 = last.1.max(rev);
                }
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                eprintln!("ferry to-file: wrote {}", path.display());
                self.fin(file.held).await;
                Ok(())
            }
            Err(err) => {
                requeue(file.held).await;
                Err(err.context(format!("cannot close {}", file.tmp.display())))
            }
        }
    }

    /// Closes every file (shutdown).
    async fn close_all(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for i in 0..self.outs.len() {
            if let Err(err) = self.close(i).await {
                eprintln!("ferry to-file: {err:#}");
                result = Err(err);
            }
        }
        result
    }

    /// Gives back every held message (after an error): they will be written again.
    async fn requeue_all(&mut self) {
        for out in &mut self.outs {
            if let Some(file) = out.file.take() {
                requeue(file.held).await;
            }
        }
    }

    async fn fin(&self, held: Vec<Message>) {
        let n = held.len() as u64;
        for msg in held {
            // A lost connection means the broker delivers the message again (at least once).
            let _ = msg.finish().await;
        }
        self.progress.done.fetch_add(n, Ordering::Relaxed);
    }
}

async fn requeue(held: Vec<Message>) {
    for msg in held {
        let _ = msg.requeue_without_backoff(Some(Duration::ZERO)).await;
    }
}

/// Gives the synced file `tmp` its final name in `dir`, never replacing a file: the name at
/// `base` with the first free revision from `rev`. Returns the final path and its revision,
/// once the directories are synced.
fn publish(
    tmp: &Path,
    dir: &Path,
    base: &str,
    mut rev: u32,
    has_rev: bool,
) -> anyhow::Result<(PathBuf, u32)> {
    loop {
        let path = dir.join(file_name::with_rev(base, rev));
        // A hard link fails if the name exists, where a rename would replace it.
        match std::fs::hard_link(tmp, &path) {
            Ok(()) => {
                std::fs::remove_file(tmp)?;
                sync_dir(dir)?;
                if let Some(work) = tmp.parent()
                    && work != dir
                {
                    sync_dir(work)?;
                }
                return Ok((path, rev));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && has_rev => rev += 1,
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot link to {}", path.display()))
                );
            }
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Gives working files left by a crash (`<name>.tmp`, `<name>` a name of one of `topics` in
/// `format`) their final name, if it is free; else leaves them with a warning.
fn recover_leftovers(
    work_dir: &Path,
    output_dir: &Path,
    topics: &[String],
    format: &NameFormat,
) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(work_dir)
        .with_context(|| format!("cannot list {}", work_dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(final_name) = name.strip_suffix(TMP_SUFFIX) else {
            continue;
        };
        if !topics.iter().any(|t| format.matches(t, final_name)) {
            continue;
        }
        let path = output_dir.join(final_name);
        match std::fs::hard_link(entry.path(), &path) {
            Ok(()) => {
                std::fs::remove_file(entry.path())?;
                eprintln!(
                    "ferry to-file: recovered {} left by an earlier run as {}",
                    entry.path().display(),
                    path.display()
                );
            }
            Err(e) => eprintln!(
                "ferry to-file: leaving {} from an earlier run: cannot name it {}: {e}",
                entry.path().display(),
                path.display()
            ),
        }
    }
    sync_dir(output_dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("t.log.tmp");
        std::fs::write(dir.path().join("t.log"), "old").unwrap();
        std::fs::write(&tmp, "new").unwrap();
        let (path, rev) = publish(&tmp, dir.path(), "t<REV>.log", 0, true).unwrap();
        assert_eq!(
            (path.file_name().unwrap().to_str(), rev),
            (Some("t-1.log"), 1)
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t.log")).unwrap(),
            "old"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert!(!tmp.exists());
        std::fs::write(&tmp, "newer").unwrap();
        assert!(publish(&tmp, dir.path(), "t.log", 0, false).is_err());
        assert!(tmp.exists(), "kept when no name is free");
    }

    #[test]
    fn leftovers_of_a_crash_get_their_final_names() {
        let work = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("orders.h.log.tmp"), "a").unwrap();
        std::fs::write(work.path().join("orders2.h.log.tmp"), "b").unwrap();
        std::fs::write(work.path().join("orders.h-1.log.tmp"), "c").unwrap();
        std::fs::write(out.path().join("orders.h-1.log"), "taken").unwrap();
        let format = NameFormat::new("<TOPIC>.h<REV>.log", "%Y", false).unwrap();
        recover_leftovers(work.path(), out.path(), &["orders".to_owned()], &format).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("orders.h.log")).unwrap(),
            "a"
        );
        assert!(!work.path().join("orders.h.log.tmp").exists());
        // Not ours, or its name is taken: left as it is.
        assert!(work.path().join("orders2.h.log.tmp").exists());
        assert!(work.path().join("orders.h-1.log.tmp").exists());
        assert_eq!(
            std::fs::read_to_string(out.path().join("orders.h-1.log")).unwrap(),
            "taken"
        );
    }
}
