//! `ferry import-nsqd --data-path DIR`: a dry run of the import `brokerd` does when it first
//! starts on an nsqd 1.x data directory. It only reads (`nsqd.dat` and every disk queue it
//! names, streaming) and prints, per topic and channel, the messages, body bytes and paused
//! flag that would be imported, then the totals. A missing or corrupt directory is an error
//! naming the file, which is also what would stop `brokerd`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use ferry_brokerd::nsqd_import::{self, ImportRecord, ImportState, Plan};

/// Count what `brokerd --data-path DIR` would import from nsqd 1.x data in DIR, without
/// changing anything.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// nsqd's data directory (its `--data-path`, holding `nsqd.dat`).
    #[arg(long, value_name = "DIR")]
    pub data_path: PathBuf,
}

/// Scans the directory and returns the report to print.
pub fn run(args: &ImportArgs) -> anyhow::Result<String> {
    let dir = &args.data_path;
    if !dir.is_dir() {
        anyhow::bail!("data path {} is not a directory", dir.display());
    }
    let plan = nsqd_import::scan(dir)
        .with_context(|| format!("cannot read the nsqd data in {}", dir.display()))?;
    let marker = nsqd_import::read_marker(dir)?;
    Ok(render(&plan, marker.as_ref()))
}

/// The report: a table of topics (channel `-`: the topic's own backlog) and channels, totals,
/// warnings, and what `brokerd` will do with it.
pub fn render(plan: &Plan, marker: Option<&ImportRecord>) -> String {
    let version = match plan.nsqd_version.as_str() {
        "" => "nsqd",
        v => v,
    };
    let mut out = format!("nsqd {version} data in {}\n", plan.dir.display());
    let mut rows = vec![[
        "TOPIC".to_owned(),
        "CHANNEL".to_owned(),
        "MESSAGES".to_owned(),
        "BYTES".to_owned(),
        "PAUSED".to_owned(),
    ]];
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    for t in &plan.topics {
        rows.push([
            t.name.clone(),
            "-".to_owned(),
            t.queue.messages.to_string(),
            t.queue.bytes.to_string(),
            yes_no(t.paused),
        ]);
        for c in &t.channels {
            rows.push([
                t.name.clone(),
                c.name.clone(),
                c.queue.messages.to_string(),
                c.queue.bytes.to_string(),
                yes_no(c.paused),
            ]);
        }
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in &rows {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
    }
    let stored = plan.stored();
    let _ = writeln!(
        out,
        "total: {} topics, {} channels, {} messages, {} bytes",
        plan.topics.len(),
        plan.channel_count(),
        stored.messages,
        stored.bytes
    );
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    match marker {
        Some(m) if m.state == ImportState::Done => {
            let at = UNIX_EPOCH + Duration::from_secs(m.imported_at_unix.max(0) as u64);
            let _ = writeln!(
                out,
                "already imported by brokerd at {} ({} messages); brokerd ignores these files now",
                humantime::format_rfc3339_seconds(at),
                m.messages
            );
        }
        Some(_) => {
            let _ = writeln!(
                out,
                "an import was interrupted; brokerd finishes it at its next start"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "brokerd --data-path {} imports this at its next start (each channel gets its \
                 own backlog plus its topic's); nsqd's files are left as they are",
                plan.dir.display()
            );
        }
    }
    out
}
