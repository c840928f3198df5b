//! The reader task: frames from the broker, replies matched FIFO, heartbeats answered, messages
//! handed on in batches.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::v2::{self, Command, Frame, HEARTBEAT};
use tokio::io::AsyncReadExt;
use tokio::io::ReadHalf;
use tracing::{debug, warn};

use crate::error::{Error, from_error_frame};
use crate::message::Message;

use super::{Deliver, MAX_FRAME_SIZE, READ_CHUNK, ReplyError, Shared, Stream};

/// The reader task's state.
pub(super) struct Reader {
    pub(super) rd: ReadHalf<Box<dyn Stream>>,
    pub(super) rbuf: BytesMut,
    pub(super) shared: Arc<Shared>,
    pub(super) deliver: Option<Deliver>,
    /// Messages decoded from the current read, delivered together.
    pub(super) batch: Vec<Message>,
    pub(super) read_timeout: Duration,
}

impl Reader {
    pub(super) async fn run(mut self) {
        match self.serve().await {
            Ok(()) => debug!(addr = %self.shared.addr, "connection closed"),
            Err(err) => debug!(addr = %self.shared.addr, error = %err, "connection lost"),
        }
        self.shared.fail();
    }

    /// Reads and dispatches frames until the connection ends (`Ok` on EOF or local close).
    async fn serve(&mut self) -> Result<(), Error> {
        loop {
            while let Some(frame) =
                v2::decode_frame(&mut self.rbuf, MAX_FRAME_SIZE).map_err(|source| Error::Frame {
                    addr: self.shared.addr.clone(),
                    source,
                })?
            {
                self.dispatch(frame)?;
            }
            if let Some(deliver) = &self.deliver
                && !self.batch.is_empty()
            {
                deliver.conn.received_batch(self.batch.len());
                let batch = std::mem::take(&mut self.batch);
                if deliver.queue.send(batch).await.is_err() {
                    // Nobody takes messages any more (the stream was dropped): they were
                    // dropped, hence requeued; stop receiving more.
                    return Ok(());
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                // Decoded frames are zero-copy slices; once they are dropped this reclaims the
                // same memory instead of allocating.
                self.rbuf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                _ = self.shared.closed.cancelled() => return Ok(()),
                read = tokio::time::timeout(self.read_timeout, self.rd.read_buf(&mut self.rbuf)) => read,
            };
            match read {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(source)) => {
                    return Err(Error::Io {
                        addr: self.shared.addr.clone(),
                        source,
                    });
                }
                Err(_elapsed) => {
                    return Err(Error::Timeout {
                        addr: self.shared.addr.clone(),
                        during: "reading",
                        timeout: self.read_timeout,
                    });
                }
            }
        }
    }

    fn dispatch(&mut self, frame: Frame) -> Result<(), Error> {
        match frame {
            Frame::Response(data) if data == HEARTBEAT => {
                // Only fails if the connection is dead or flooded; the reply is not urgent.
                self.shared.push_command(&Command::Nop);
            }
            Frame::Response(data) => match self.shared.pop_reply() {
                Some(reply) => {
                    let _ = reply.send(Ok(data));
                }
                None => debug!(addr = %self.shared.addr, ?data, "response without a request"),
            },
            Frame::Error(data) => {
                let err = from_error_frame(&self.shared.addr, &data);
                match err.code() {
                    Some(code) if !code.is_fatal() => {
                        // FIN/REQ/TOUCH of a message that timed out meanwhile: not fatal.
                        debug!(addr = %self.shared.addr, error = %err, "broker refused a command");
                    }
                    _ => {
                        // Fatal: the broker closes the connection after this frame.
                        match self.shared.pop_reply() {
                            Some(reply) => {
                                let _ = reply.send(Err(ReplyError::Failed(err)));
                            }
                            None => warn!(addr = %self.shared.addr, error = %err, "broker error"),
                        }
                    }
                }
            }
            Frame::Message(msg) => {
                let Some(deliver) = &self.deliver else {
                    return Err(Error::UnexpectedFrame {
                        addr: self.shared.addr.clone(),
                        what: "message on a producer connection".into(),
                    });
                };
                self.batch.push(Message::new(msg, &deliver.conn));
            }
        }
        Ok(())
    }
}
