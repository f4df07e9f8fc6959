//! Packet framing: the 4-byte MySQL header (3-byte length, 1-byte sequence id), logical packets
//! that span several frames (payload ≥ 16 MiB − 1), buffered reads and batched writes, and
//! polling a socket briefly for input due soon.
//!
//! Owns: `PacketStream`, the only type that reads or writes MySQL frames on a socket.
//! May import: tokio io, bytes, libc (poll). Knows nothing about commands or sessions.

use bytes::{Buf, BufMut, BytesMut};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload one frame can carry; a frame of exactly this size is followed by another.
pub const MAX_FRAME: usize = 0xFF_FFFF;
const HEADER: usize = 4;
/// Write-buffer size at which relays flush before reading more.
pub const FLUSH_AT: usize = 64 * 1024;

/// One frame as it sits in the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    pub seq: u8,
    pub len: usize,
}

/// A logical packet: the payload of one or more frames joined, and the sequence id of its
/// last frame (replies continue from there).
#[derive(Debug)]
pub struct Packet {
    pub seq: u8,
    pub payload: Vec<u8>,
}

/// How many frames a logical packet of `len` bytes takes (one of exactly 16 MiB − 1 bytes
/// needs an empty one after it).
pub fn frames_for(len: usize) -> usize {
    len / MAX_FRAME + 1
}

/// Buffered MySQL framing over any byte stream.
pub struct PacketStream<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Cap on a logical packet read with `read_packet`; `None` means unlimited.
    max_packet: Option<usize>,
    /// Bytes handed to the socket so far.
    written: u64,
    /// The sequence id the answer to the client's current command starts at (None: frames
    /// forwarded or queued raw keep their ids).
    answer_seq: Option<u8>,
    /// Subtracted from the sequence id of every frame forwarded or queued raw into this
    /// stream during the current command, learned from the first: the proxy may send the
    /// backend a command in another number of 16 MiB frames than the client sent it (long
    /// data put inline, a rewritten or split text), and the backend numbers its answer after
    /// the frames it got.
    forward_seq_shift: Option<u8>,
    /// The read buffer was grown for a frame larger than `KEEP_BUFFER` (BytesMut does not
    /// show how much it holds once read from).
    rbuf_grown: bool,
    /// The plain socket under `stream`, for `poll_for_input` (None: not polled).
    poll_fd: Option<RawFd>,
}

/// Buffers are made at this size, and one grown past `KEEP_BUFFER` for a large packet (a
/// bulk load's statement or file) is dropped once empty: otherwise every connection that
/// once carried one keeps its size for life, pooled ones included.
const BUFFER: usize = 16 * 1024;
const KEEP_BUFFER: usize = 1 << 20;

/// Whether `fd` has input (or an end or error) right now; a zero-timeout `poll(2)`.
fn socket_readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one initialised pollfd for a descriptor the caller's stream owns, no wait.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// Reading a packet larger than the configured cap.
#[derive(Debug, thiserror::Error)]
#[error("packet of {size} bytes exceeds the cap of {cap} bytes (max_allowed_packet)")]
pub struct PacketTooLarge {
    pub size: usize,
    pub cap: usize,
    /// Sequence id of the packet's last frame: an answer continues from it.
    pub last_seq: u8,
}

impl<S> PacketStream<S> {
    /// The id a forwarded frame numbered `seq` by the backend gets here.
    fn answer_seq_of(&mut self, seq: u8) -> u8 {
        let Some(start) = self.answer_seq else {
            return seq;
        };
        let shift = *self
            .forward_seq_shift
            .get_or_insert_with(|| seq.wrapping_sub(start));
        seq.wrapping_sub(shift)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    pub fn new(stream: S) -> Self {
        PacketStream {
            stream,
            rbuf: BytesMut::with_capacity(BUFFER),
            wbuf: BytesMut::with_capacity(BUFFER),
            max_packet: None,
            written: 0,
            answer_seq: None,
            forward_seq_shift: None,
            rbuf_grown: false,
            poll_fd: None,
        }
    }

    /// Lets `poll_for_input` poll `fd`, the plain socket `stream` reads from. Not for a TLS
    /// stream: its library may hold decrypted input the socket no longer shows.
    pub fn set_poll_fd(&mut self, fd: RawFd) {
        self.poll_fd = Some(fd);
    }

    /// Waits up to `budget` for input by polling the socket instead of sleeping, while
    /// `keep_on()` holds; returns whether input is there. Meant for input due within
    /// microseconds (a client's next command of a transaction): on a VM a sleeping thread
    /// takes tens of µs to wake (43–56 µs measured for a Unix-socket ping-pong of two
    /// sleeping processes on the 2-vCPU test box, 13 µs when one polls), and the proxy would
    /// pay that on every command on top of the client's and server's own. It holds the
    /// runtime worker it runs on for up to `budget` (yielding between polls went through
    /// the scheduler and lost a third of the gain); the caller decides when that is cheap.
    pub fn poll_for_input(&self, budget: Duration, keep_on: impl Fn() -> bool) -> bool {
        if !self.rbuf.is_empty() {
            return true;
        }
        let Some(fd) = self.poll_fd else {
            return false;
        };
        let start = Instant::now();
        loop {
            if socket_readable(fd) {
                return true;
            }
            if start.elapsed() >= budget || !keep_on() {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    pub fn set_max_packet(&mut self, cap: Option<usize>) {
        self.max_packet = cap;
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Hands back the socket and anything already read but not consumed (used when a
    /// connection is upgraded to TLS; the buffer must then be empty).
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// Reads more bytes from the socket into the read buffer. EOF is an `UnexpectedEof` error.
    async fn fill(&mut self) -> io::Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by peer",
            ));
        }
        Ok(())
    }

    /// The header of the next frame if at least its header is buffered.
    fn peek_header(&self) -> Option<FrameInfo> {
        if self.rbuf.len() < HEADER {
            return None;
        }
        let len =
            self.rbuf[0] as usize | (self.rbuf[1] as usize) << 8 | (self.rbuf[2] as usize) << 16;
        Some(FrameInfo {
            seq: self.rbuf[3],
            len,
        })
    }

    /// Waits until one whole frame is buffered and returns its header; the frame stays in the
    /// buffer (see `frame_payload`, `consume_frame`, `forward_frame`).
    pub async fn next_frame(&mut self) -> io::Result<FrameInfo> {
        loop {
            if let Some(h) = self.peek_header() {
                if self.rbuf.len() >= HEADER + h.len {
                    return Ok(h);
                }
                self.rbuf_grown |= HEADER + h.len > KEEP_BUFFER;
                self.rbuf.reserve(HEADER + h.len - self.rbuf.len());
            }
            self.fill().await?;
        }
    }

    /// Whether any input is buffered, whole frame or not (no I/O).
    pub fn has_buffered_input(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Whether a whole frame is already buffered (no I/O).
    pub fn has_buffered_frame(&self) -> bool {
        matches!(self.peek_header(), Some(h) if self.rbuf.len() >= HEADER + h.len)
    }

    /// The payload of the buffered frame returned by `next_frame`.
    pub fn frame_payload(&self, info: FrameInfo) -> &[u8] {
        &self.rbuf[HEADER..HEADER + info.len]
    }

    /// Mutable payload of the buffered frame (statement-id rewriting happens in place).
    pub fn frame_payload_mut(&mut self, info: FrameInfo) -> &mut [u8] {
        &mut self.rbuf[HEADER..HEADER + info.len]
    }

    /// Drops the buffered frame.
    pub fn consume_frame(&mut self, info: FrameInfo) {
        self.rbuf.advance(HEADER + info.len);
        self.release_grown_read_buffer();
    }

    fn release_grown_read_buffer(&mut self) {
        if self.rbuf_grown && self.rbuf.is_empty() {
            self.rbuf = BytesMut::with_capacity(BUFFER);
            self.rbuf_grown = false;
        }
    }

    /// Moves the buffered frame, header and all, into another stream's write buffer: the
    /// relay path, which never re-encodes a packet.
    pub fn forward_frame<T>(&mut self, info: FrameInfo, to: &mut PacketStream<T>) {
        let at = to.wbuf.len();
        to.wbuf.extend_from_slice(&self.rbuf[..HEADER + info.len]);
        self.rbuf.advance(HEADER + info.len);
        self.release_grown_read_buffer();
        to.wbuf[at + 3] = to.answer_seq_of(info.seq);
    }

    /// A new command from this (client) stream: its answer starts at sequence id `seq`, and
    /// frames forwarded or queued raw are renumbered from there (see `forward_seq_shift`).
    pub fn expect_answer_at(&mut self, seq: u8) {
        self.answer_seq = Some(seq);
        self.forward_seq_shift = None;
    }

    /// The sequence id the current command's answer starts at (1 outside a command).
    pub fn answer_seq(&self) -> u8 {
        self.answer_seq.unwrap_or(1)
    }

    /// Reads one logical packet (joining continuation frames).
    pub async fn read_packet(&mut self) -> io::Result<Packet> {
        let mut payload = Vec::new();
        loop {
            let info = self.next_frame().await?;
            if let Some(cap) = self.max_packet {
                if payload.len() + info.len > cap {
                    let size = payload.len() + info.len;
                    let last_seq = self.discard_rest_of_packet(info).await?;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        PacketTooLarge {
                            size,
                            cap,
                            last_seq,
                        },
                    ));
                }
            }
            payload.extend_from_slice(self.frame_payload(info));
            self.consume_frame(info);
            if info.len < MAX_FRAME {
                return Ok(Packet {
                    seq: info.seq,
                    payload,
                });
            }
        }
    }

    /// Skips the remaining frames of an oversize packet so the stream stays in sync; returns
    /// the sequence id of its last frame.
    async fn discard_rest_of_packet(&mut self, mut info: FrameInfo) -> io::Result<u8> {
        loop {
            self.consume_frame(info);
            if info.len < MAX_FRAME {
                return Ok(info.seq);
            }
            info = self.next_frame().await?;
        }
    }

    /// Queues a logical packet, split into frames, starting at sequence id `seq`. Returns
    /// the sequence id the next packet should use.
    pub fn queue_packet(&mut self, mut seq: u8, payload: &[u8]) -> u8 {
        let mut chunks = payload.chunks(MAX_FRAME).peekable();
        if chunks.peek().is_none() {
            self.queue_frame(seq, &[]);
            return seq.wrapping_add(1);
        }
        while let Some(chunk) = chunks.next() {
            self.queue_frame(seq, chunk);
            seq = seq.wrapping_add(1);
            if chunks.peek().is_none() && chunk.len() == MAX_FRAME {
                self.queue_frame(seq, &[]);
                seq = seq.wrapping_add(1);
            }
        }
        seq
    }

    fn queue_frame(&mut self, seq: u8, chunk: &[u8]) {
        let len = chunk.len() as u32;
        self.wbuf.reserve(HEADER + chunk.len());
        self.wbuf.put_u8(len as u8);
        self.wbuf.put_u8((len >> 8) as u8);
        self.wbuf.put_u8((len >> 16) as u8);
        self.wbuf.put_u8(seq);
        self.wbuf.extend_from_slice(chunk);
    }

    /// Queues already framed bytes (headers included), as `relay::buffer_response` holds them.
    pub fn queue_raw(&mut self, frames: &[u8]) {
        let at = self.wbuf.len();
        self.wbuf.extend_from_slice(frames);
        if self.answer_seq.is_some() {
            let mut i = at;
            while i + HEADER <= self.wbuf.len() {
                let len = usize::from(self.wbuf[i])
                    | usize::from(self.wbuf[i + 1]) << 8
                    | usize::from(self.wbuf[i + 2]) << 16;
                self.wbuf[i + 3] = self.answer_seq_of(self.wbuf[i + 3]);
                if self.forward_seq_shift == Some(0) {
                    // The usual case: the rest is numbered as the client expects.
                    break;
                }
                i += HEADER + len;
            }
        }
    }

    pub fn pending_write(&self) -> usize {
        self.wbuf.len()
    }

    /// Bytes written or queued so far: unchanged across a command means the peer has heard
    /// nothing of its answer yet.
    pub fn bytes_out(&self) -> u64 {
        self.written + self.wbuf.len() as u64
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.written += self.wbuf.len() as u64;
            self.wbuf.clear();
            if self.wbuf.capacity() > KEEP_BUFFER {
                self.wbuf = BytesMut::with_capacity(BUFFER);
            }
        }
        self.stream.flush().await
    }

    /// Queues and flushes one packet.
    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) -> io::Result<u8> {
        let next = self.queue_packet(seq, payload);
        self.flush().await?;
        Ok(next)
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polling_sees_input_that_arrives_within_the_budget_and_gives_up_after_it() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&b);
        let mut r = PacketStream::new(b);
        let mut w = PacketStream::new(a);
        // Without a descriptor there is nothing to poll.
        assert!(!r.poll_for_input(Duration::from_millis(5), || true));
        r.set_poll_fd(fd);
        let started = Instant::now();
        assert!(!r.poll_for_input(Duration::from_millis(20), || true));
        assert!(started.elapsed() >= Duration::from_millis(20));
        // `keep_on` ends it early.
        let started = Instant::now();
        assert!(!r.poll_for_input(Duration::from_secs(5), || false));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Input written by another task while this one polls.
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            w.write_packet(0, b"next command").await.unwrap();
            w
        });
        assert!(r.poll_for_input(Duration::from_secs(5), || true));
        assert_eq!(r.read_packet().await.unwrap().payload, b"next command");
        // Buffered input counts without a look at the socket.
        let mut w = writer.await.unwrap();
        w.queue_packet(0, b"one");
        w.queue_packet(0, b"two");
        w.flush().await.unwrap();
        assert_eq!(r.read_packet().await.unwrap().payload, b"one");
        assert!(r.poll_for_input(Duration::ZERO, || false));
    }

    #[tokio::test]
    async fn roundtrip_small_and_split_packets() {
        let (a, b) = tokio::io::duplex(64 * 1024 * 1024);
        let mut w = PacketStream::new(a);
        let mut r = PacketStream::new(b);
        let exact = vec![7u8; MAX_FRAME];
        let big = vec![9u8; MAX_FRAME * 2 + 10];
        let writer = tokio::spawn(async move {
            w.queue_packet(0, b"hello");
            w.queue_packet(1, &[]);
            w.queue_packet(2, &exact);
            w.queue_packet(0, &big);
            w.flush().await.unwrap();
            w
        });
        let p = r.read_packet().await.unwrap();
        assert_eq!((p.seq, p.payload.as_slice()), (0, &b"hello"[..]));
        let p = r.read_packet().await.unwrap();
        assert_eq!((p.seq, p.payload.len()), (1, 0));
        let p = r.read_packet().await.unwrap();
        // Exactly 16 MiB − 1 needs an empty trailing frame: seq 2 then 3.
        assert_eq!((p.seq, p.payload.len()), (3, MAX_FRAME));
        let p = r.read_packet().await.unwrap();
        assert_eq!((p.seq, p.payload.len()), (2, MAX_FRAME * 2 + 10));
        assert!(p.payload.iter().all(|&b| b == 9));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn buffers_grown_for_a_large_packet_are_released_once_empty() {
        let (a, b) = tokio::io::duplex(64 * 1024 * 1024);
        let mut w = PacketStream::new(a);
        let mut r = PacketStream::new(b);
        let big = vec![5u8; 3 * KEEP_BUFFER];
        w.queue_packet(0, &big);
        w.flush().await.unwrap();
        assert!(w.wbuf.capacity() <= KEEP_BUFFER, "{}", w.wbuf.capacity());
        let f = r.next_frame().await.unwrap();
        assert_eq!(r.frame_payload(f).len(), big.len());
        assert!(r.rbuf_grown);
        r.consume_frame(f);
        assert!(!r.rbuf_grown && r.rbuf.capacity() <= KEEP_BUFFER);
        w.queue_packet(1, b"after");
        w.flush().await.unwrap();
        let p = r.read_packet().await.unwrap();
        assert_eq!((p.seq, p.payload), (1, b"after".to_vec()));
    }

    #[tokio::test]
    async fn a_seq_shift_renumbers_forwarded_and_raw_frames() {
        let (a, b) = tokio::io::duplex(1024);
        let mut client = PacketStream::new(a);
        let mut peer = PacketStream::new(b);
        // The backend answered from seq 3; the client expects 1.
        client.expect_answer_at(1);
        client.queue_raw(&[1, 0, 0, 3, 0xAA, 2, 0, 0, 4, 0xBB, 0xCC]);
        client.flush().await.unwrap();
        let p = peer.read_packet().await.unwrap();
        assert_eq!((p.seq, p.payload), (1, vec![0xAA]));
        let p = peer.read_packet().await.unwrap();
        assert_eq!((p.seq, p.payload), (2, vec![0xBB, 0xCC]));
        assert_eq!(frames_for(0), 1);
        assert_eq!(frames_for(MAX_FRAME - 1), 1);
        assert_eq!(frames_for(MAX_FRAME), 2);
    }

    #[tokio::test]
    async fn oversize_packet_is_refused_and_stream_stays_in_sync() {
        let (a, b) = tokio::io::duplex(1024 * 1024);
        let mut r = PacketStream::new(b);
        r.set_max_packet(Some(100));
        let writer = tokio::spawn(async move {
            let mut w = PacketStream::new(a);
            // Three frames (seq 4, 5, 6), as a client continuing a command sends them.
            w.queue_packet(4, &vec![1u8; MAX_FRAME * 2 + 10]);
            w.queue_packet(0, b"next");
            w.flush().await.unwrap();
        });
        let err = r.read_packet().await.unwrap_err();
        let too_large = err.get_ref().unwrap().downcast_ref::<PacketTooLarge>();
        // The answer must continue from the last frame's sequence id.
        assert_eq!(too_large.map(|t| t.last_seq), Some(6));
        let p = r.read_packet().await.unwrap();
        assert_eq!(p.payload, b"next");
        writer.await.unwrap();
    }
}
