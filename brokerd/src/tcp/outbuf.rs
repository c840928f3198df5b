//! Output buffer of one connection: small frames are coalesced into one `BytesMut`, large message
//! bodies are kept as the `Bytes` that point into the log (no copy) and written with vectored I/O.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bodies at least this large are written from the log's memory instead of being copied.
const ZERO_COPY_MIN: usize = 4096;
/// At most this many slices per `writev`.
const MAX_IOVECS: usize = 64;

/// Pending output.
#[derive(Debug, Default)]
pub struct OutBuf {
    sealed: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl OutBuf {
    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes written by `f` into the coalescing buffer.
    pub fn put_with(&mut self, f: impl FnOnce(&mut BytesMut)) {
        let before = self.tail.len();
        f(&mut self.tail);
        self.len += self.tail.len() - before;
    }

    /// Appends a body, copying it only if it is small.
    pub fn put_bytes(&mut self, b: Bytes) {
        self.len += b.len();
        if b.len() < ZERO_COPY_MIN {
            self.tail.extend_from_slice(&b);
        } else {
            self.seal();
            self.sealed.push_back(b);
        }
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.sealed.push_back(self.tail.split().freeze());
        }
    }

    /// Drops everything put after the first `len` bytes still waiting (nothing if fewer wait).
    /// Used to take back acknowledgements that were held for durability and must not be sent.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        self.seal();
        let mut excess = self.len - len;
        while excess > 0 {
            let Some(back) = self.sealed.back_mut() else {
                break;
            };
            if back.len() <= excess {
                excess -= back.len();
                self.sealed.pop_back();
            } else {
                let keep = back.len() - excess;
                back.truncate(keep);
                excess = 0;
            }
        }
        self.len = len;
    }

    /// Frees the buffers' memory if nothing is pending (an idle connection keeps none).
    pub fn shed(&mut self) {
        if self.is_empty() {
            self.tail = BytesMut::new();
            self.sealed = VecDeque::new();
        }
    }

    /// Writes the first `n` bytes out (all if fewer wait); the rest stays.
    pub async fn flush_prefix<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        n: usize,
    ) -> std::io::Result<()> {
        self.seal();
        let mut left = n.min(self.len);
        while left > 0 {
            let n = {
                let mut budget = left;
                let slices: Vec<IoSlice<'_>> = self
                    .sealed
                    .iter()
                    .take(MAX_IOVECS)
                    .map_while(|b| {
                        let take = b.len().min(budget);
                        budget -= take;
                        (take > 0).then(|| IoSlice::new(&b[..take]))
                    })
                    .collect();
                w.write_vectored(&slices).await?
            };
            left -= n;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.advance(n);
        }
        w.flush().await
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.sealed.front_mut() else {
                return;
            };
            if front.len() <= n {
                n -= front.len();
                self.sealed.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_small_and_large_in_order() {
        let mut out = OutBuf::default();
        out.put_with(|b| b.extend_from_slice(b"head"));
        let big = Bytes::from(vec![7u8; 10_000]);
        out.put_bytes(big.clone());
        out.put_bytes(Bytes::from_static(b"tail"));
        assert_eq!(out.len(), 4 + 10_000 + 4);
        let mut sink = Vec::new();
        out.flush_prefix(&mut sink, usize::MAX).await.unwrap();
        assert!(out.is_empty());
        assert_eq!(&sink[..4], b"head");
        assert_eq!(&sink[4..10_004], &big[..]);
        assert_eq!(&sink[10_004..], b"tail");
    }

    #[tokio::test]
    async fn flush_prefix_writes_exactly_the_prefix() {
        let mut out = OutBuf::default();
        out.put_with(|b| b.extend_from_slice(b"ab"));
        out.put_bytes(Bytes::from(vec![9u8; 5000]));
        out.put_with(|b| b.extend_from_slice(b"cd"));
        let mut sink = Vec::new();
        out.flush_prefix(&mut sink, 3).await.unwrap();
        assert_eq!(sink, b"ab\x09");
        assert_eq!(out.len(), 4999 + 2);
        out.flush_prefix(&mut sink, usize::MAX).await.unwrap();
        assert_eq!(sink.len(), 5004);
        assert_eq!(&sink[5002..], b"cd");
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn truncate_drops_the_end_only() {
        let mut out = OutBuf::default();
        out.put_with(|b| b.extend_from_slice(b"keep"));
        let mark = out.len();
        out.put_bytes(Bytes::from(vec![1u8; 5000]));
        out.put_with(|b| b.extend_from_slice(b"drop"));
        out.truncate(mark + 2);
        assert_eq!(out.len(), mark + 2);
        out.put_with(|b| b.extend_from_slice(b"!"));
        let mut sink = Vec::new();
        out.flush_prefix(&mut sink, usize::MAX).await.unwrap();
        assert_eq!(sink, b"keep\x01\x01!");
        out.truncate(0);
        assert!(out.is_empty());
    }
}
