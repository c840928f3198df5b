//! The writer task: requests and queued commands written in batches, one write per round.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::io::WriteHalf;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{COMMANDS_LIMIT, Outgoing, Shared, Stream, WRITE_BATCH};

/// Writes queued commands in batches until closed, then shuts the write side down.
pub(super) async fn write_loop(
    mut wr: WriteHalf<Box<dyn Stream>>,
    mut rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    write_timeout: Duration,
) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH * 2);
    let mut spare = BytesMut::with_capacity(WRITE_BATCH);
    'run: loop {
        let (first, mut closing) = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break,
            _ = shared.commands_ready.notified() => (None, false),
            out = rx.recv() => match out {
                Some(out) => (Some(out), false),
                // Every sender is gone: write what they left, then close.
                None => (None, true),
            },
        };
        let mut next = first;
        while !closing {
            match next.take() {
                Some(Outgoing::Request { encoded, reply }) => {
                    if !shared.push_reply(reply) {
                        break 'run;
                    }
                    if encoded.len() >= WRITE_BATCH {
                        // Large batches go out as they are, after what is already queued.
                        if write(&mut wr, &buf, &shared, write_timeout).await.is_err()
                            || write(&mut wr, &encoded, &shared, write_timeout)
                                .await
                                .is_err()
                        {
                            break 'run;
                        }
                        buf.clear();
                    } else {
                        buf.extend_from_slice(&encoded);
                    }
                }
                Some(Outgoing::Close) => {
                    closing = true;
                    break;
                }
                None => {}
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(out) => next = Some(out),
                Err(_empty_or_closed) => break,
            }
        }
        // The answerless commands queued so far, by buffer swap.
        let drained = {
            let mut commands = shared.lock_commands();
            std::mem::swap(&mut *commands, &mut spare);
            spare.len() >= COMMANDS_LIMIT
        };
        buf.extend_from_slice(&spare);
        spare.clear();
        if drained {
            shared.commands_drained.notify_waiters();
        }
        if write(&mut wr, &buf, &shared, write_timeout).await.is_err() {
            break;
        }
        buf.clear();
        if closing {
            break;
        }
    }
    // Requests still queued were never written: dropping `rx` answers them NotSent.
    drop(rx);
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
}

/// One bounded write; on failure the connection is marked dead.
async fn write(
    wr: &mut WriteHalf<Box<dyn Stream>>,
    bytes: &[u8],
    shared: &Shared,
    write_timeout: Duration,
) -> Result<(), ()> {
    if bytes.is_empty() {
        return Ok(());
    }
    // Flushing matters for layered streams (a compressed frame is only emitted on flush).
    let write = async {
        wr.write_all(bytes).await?;
        wr.flush().await
    };
    match tokio::time::timeout(write_timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            debug!(addr = %shared.addr, error = %err, "write failed");
            shared.fail();
            Err(())
        }
        Err(_elapsed) => {
            warn!(addr = %shared.addr, timeout = ?write_timeout, "write timed out");
            shared.fail();
            Err(())
        }
    }
}
