//! Relaying a backend's response to a client frame by frame, without re-encoding: the frames
//! are copied header and all, so sequence ids, charsets, decimals, warnings, status flags,
//! SQLSTATE and the more-results flag arrive exactly as the server sent them. A small state
//! machine only finds where the response ends and picks up the fields the proxy tracks.
//! Two rewrites in place, same length: a prepare-OK's statement id, and the autocommit and
//! transaction bits of the status flags of an answer the proxy ran in another transaction
//! state than the client's session is in (`relay_response_showing`, `patch_final_status`).
//!
//! Owns: response boundaries per command. May import: protocol::{packet, message}.

use super::message::{
    is_terminator, read_lenenc_int, terminator_status, MysqlError, OkInfo, EOF_HEADER, ERR_HEADER,
    LOCAL_INFILE_HEADER, OK_HEADER,
};
use super::packet::{PacketStream, FLUSH_AT, MAX_FRAME};
use mysql_common::constants::StatusFlags;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// What kind of response follows a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// COM_QUERY, COM_STMT_EXECUTE: OK / ERR / LOCAL INFILE / result sets, possibly several.
    ResultSets,
    /// COM_STMT_FETCH: rows and a terminator.
    Rows,
    /// COM_STMT_PREPARE: prepare-OK, parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions and a terminator.
    FieldList,
    /// One packet: OK, ERR, or COM_STATISTICS's string.
    Single,
}

/// The prepare-OK fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    pub statement_id: u32,
    pub num_columns: u16,
    pub num_params: u16,
}

impl PrepareOk {
    pub fn decode(payload: &[u8]) -> Option<Self> {
        if payload.len() < 9 || payload[0] != OK_HEADER {
            return None;
        }
        Some(PrepareOk {
            statement_id: u32::from_le_bytes(payload[1..5].try_into().ok()?),
            num_columns: u16::from_le_bytes(payload[5..7].try_into().ok()?),
            num_params: u16::from_le_bytes(payload[7..9].try_into().ok()?),
        })
    }
}

/// What the proxy learned from a relayed response.
#[derive(Debug, Clone, Default)]
pub struct ResponseSummary {
    /// The last OK packet (not a result-set terminator).
    pub ok: Option<OkInfo>,
    pub error: Option<MysqlError>,
    /// Status flags of the last OK or terminator seen.
    pub status: Option<u16>,
    pub warnings: u16,
    pub prepare: Option<PrepareOk>,
    /// Result sets that carried rows (column count > 0).
    pub result_sets: u32,
}

impl ResponseSummary {
    pub fn in_transaction(&self) -> Option<bool> {
        self.status
            .map(|s| s & StatusFlags::SERVER_STATUS_IN_TRANS.bits() != 0)
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Start,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepareParams { params: u16, columns: u16 },
    PrepareParamsEof { columns: u16 },
    PrepareColumns(u16),
    PrepareColumnsEof,
    FieldList,
    Done,
}

/// Which side of a relay failed: a backend failure ends the backend connection, a client
/// failure ends the client session.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("backend: {0}")]
    Backend(io::Error),
    #[error("client: {0}")]
    Client(io::Error),
}

/// Relays one command's response from `backend` to `client`. `rewrite_stmt_id` replaces the
/// statement id in a prepare-OK (client ids differ from backend ids). LOCAL INFILE data is
/// relayed from client to backend when the server asks for it.
pub async fn relay_response<B, C>(
    backend: &mut PacketStream<B>,
    client: &mut PacketStream<C>,
    kind: ResponseKind,
    deprecate_eof: bool,
    rewrite_stmt_id: Option<u32>,
) -> Result<ResponseSummary, RelayError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    relay(backend, client, kind, deprecate_eof, rewrite_stmt_id, None).await
}

/// Status flags a relayed answer shows the client in place of the server's: the bits of
/// `mask` are those of `bits` in every OK and terminator (and in the summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownStatus {
    pub mask: u16,
    pub bits: u16,
}

impl ShownStatus {
    fn apply(self, status: u16) -> u16 {
        (status & !self.mask) | (self.bits & self.mask)
    }
}

/// `relay_response` for a statement the proxy ran in another transaction state than the
/// client's session is in (a read run outside the client's transaction): its OKs and
/// terminators show `shown`, so the client's view of autocommit and its transaction, which
/// client libraries keep from these flags, stays the session's.
pub async fn relay_response_showing<B, C>(
    backend: &mut PacketStream<B>,
    client: &mut PacketStream<C>,
    kind: ResponseKind,
    deprecate_eof: bool,
    shown: ShownStatus,
) -> Result<ResponseSummary, RelayError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    relay(backend, client, kind, deprecate_eof, None, Some(shown)).await
}

async fn relay<B, C>(
    backend: &mut PacketStream<B>,
    client: &mut PacketStream<C>,
    kind: ResponseKind,
    deprecate_eof: bool,
    rewrite_stmt_id: Option<u32>,
    shown: Option<ShownStatus>,
) -> Result<ResponseSummary, RelayError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut summary = ResponseSummary::default();
    let mut state = match kind {
        ResponseKind::Rows => State::Rows,
        ResponseKind::FieldList => State::FieldList,
        _ => State::Start,
    };
    let mut continuation = false;
    loop {
        if !backend.has_buffered_frame() && client.pending_write() > 0 {
            client.flush().await.map_err(RelayError::Client)?;
        }
        let frame = backend.next_frame().await.map_err(RelayError::Backend)?;
        if continuation {
            // The rest of a packet of 16 MiB or more: nothing to interpret.
            continuation = frame.len == MAX_FRAME;
            backend.forward_frame(frame, client);
            if matches!(state, State::Done) && !continuation {
                client.flush().await.map_err(RelayError::Client)?;
                return Ok(summary);
            }
            if client.pending_write() >= FLUSH_AT {
                client.flush().await.map_err(RelayError::Client)?;
            }
            continue;
        }
        continuation = frame.len == MAX_FRAME;
        let payload = backend.frame_payload(frame);
        let first = payload.first().copied().unwrap_or(0);
        let mut infile = false;
        // The frame carries status flags to show otherwise: an OK, an EOF, or a terminator
        // (asked only when there is something to show: this runs for every row).
        let status_frame = shown.is_some()
            && match state {
                State::Start => {
                    kind != ResponseKind::Prepare && matches!(first, OK_HEADER | EOF_HEADER)
                }
                State::Rows | State::FieldList => first != ERR_HEADER && is_terminator(payload),
                // Client libraries read the status here too.
                State::ColumnsEof => true,
                _ => false,
            };
        state = match state {
            State::Start if kind == ResponseKind::Single => {
                record_single(&mut summary, payload);
                State::Done
            }
            State::Start if kind == ResponseKind::Prepare => {
                if first == ERR_HEADER {
                    summary.error = MysqlError::decode(payload);
                    State::Done
                } else {
                    let ok = PrepareOk::decode(payload).ok_or_else(|| bad("prepare-OK"))?;
                    summary.prepare = Some(ok);
                    if let Some(id) = rewrite_stmt_id {
                        backend.frame_payload_mut(frame)[1..5].copy_from_slice(&id.to_le_bytes());
                    }
                    after_prepare_params(ok.num_params, ok.num_columns)
                }
            }
            State::Start => match first {
                OK_HEADER => {
                    let ok = OkInfo::decode(payload).ok_or_else(|| bad("OK"))?;
                    summary.ok = Some(ok);
                    summary.status = Some(ok.status);
                    summary.warnings = ok.warnings;
                    if ok.more_results() {
                        State::Start
                    } else {
                        State::Done
                    }
                }
                ERR_HEADER => {
                    summary.error = MysqlError::decode(payload);
                    State::Done
                }
                LOCAL_INFILE_HEADER => {
                    infile = true;
                    State::Start
                }
                _ => {
                    let mut b = payload;
                    let n = read_lenenc_int(&mut b).ok_or_else(|| bad("column count"))?;
                    summary.result_sets += 1;
                    State::Columns(n)
                }
            },
            State::Columns(n) => {
                let left = n.saturating_sub(1);
                if left > 0 {
                    State::Columns(left)
                } else if deprecate_eof {
                    State::Rows
                } else {
                    State::ColumnsEof
                }
            }
            State::ColumnsEof => {
                let (status, _) = terminator_status(payload, false).ok_or_else(|| bad("EOF"))?;
                if status & StatusFlags::SERVER_STATUS_CURSOR_EXISTS.bits() != 0 {
                    summary.status = Some(status);
                    State::Done
                } else {
                    State::Rows
                }
            }
            State::Rows | State::FieldList => {
                if first == ERR_HEADER {
                    summary.error = MysqlError::decode(payload);
                    State::Done
                } else if is_terminator(payload) {
                    let (status, warnings) =
                        terminator_status(payload, deprecate_eof).ok_or_else(|| bad("EOF"))?;
                    summary.status = Some(status);
                    summary.warnings = warnings;
                    if kind == ResponseKind::ResultSets
                        && status & StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits() != 0
                    {
                        State::Start
                    } else {
                        State::Done
                    }
                } else {
                    state
                }
            }
            State::PrepareParams { params, columns } => {
                if params > 1 {
                    State::PrepareParams {
                        params: params - 1,
                        columns,
                    }
                } else if deprecate_eof {
                    after_prepare_params(0, columns)
                } else {
                    State::PrepareParamsEof { columns }
                }
            }
            State::PrepareParamsEof { columns } => after_prepare_params(0, columns),
            State::PrepareColumns(n) => {
                if n > 1 {
                    State::PrepareColumns(n - 1)
                } else if deprecate_eof {
                    State::Done
                } else {
                    State::PrepareColumnsEof
                }
            }
            State::PrepareColumnsEof | State::Done => State::Done,
        };
        if let (true, Some(shown)) = (status_frame, shown) {
            let payload = backend.frame_payload_mut(frame);
            if let Some(at) = status_offset(payload) {
                let status = u16::from_le_bytes([payload[at], payload[at + 1]]);
                let patched = shown.apply(status);
                payload[at..at + 2].copy_from_slice(&patched.to_le_bytes());
                summary.status = Some(patched);
                if let Some(ok) = summary.ok.as_mut() {
                    ok.status = patched;
                }
            }
        }
        backend.forward_frame(frame, client);
        if infile {
            relay_local_infile(backend, client).await?;
        } else if matches!(state, State::Done) && !continuation {
            client.flush().await.map_err(RelayError::Client)?;
            return Ok(summary);
        }
        if client.pending_write() >= FLUSH_AT {
            client.flush().await.map_err(RelayError::Client)?;
        }
    }
}

/// Where the status flags of an OK or EOF payload are (an EOF is 5 bytes; an OK, or a
/// terminator in OK form, has its two length-encoded counts in front); None for anything
/// else.
fn status_offset(payload: &[u8]) -> Option<usize> {
    match payload.first() {
        Some(&EOF_HEADER) if payload.len() == 5 => Some(3),
        Some(&OK_HEADER | &EOF_HEADER) => {
            let mut b = payload.get(1..)?;
            let before = b.len();
            read_lenenc_int(&mut b)?;
            read_lenenc_int(&mut b)?;
            (b.len() >= 2).then(|| 1 + before - b.len())
        }
        _ => None,
    }
}

fn after_prepare_params(params: u16, columns: u16) -> State {
    if params > 0 {
        State::PrepareParams { params, columns }
    } else if columns > 0 {
        State::PrepareColumns(columns)
    } else {
        State::Done
    }
}

fn record_single(summary: &mut ResponseSummary, payload: &[u8]) {
    match payload.first() {
        Some(&OK_HEADER) => {
            if let Some(ok) = OkInfo::decode(payload) {
                summary.ok = Some(ok);
                summary.status = Some(ok.status);
                summary.warnings = ok.warnings;
            }
        }
        Some(&ERR_HEADER) => summary.error = MysqlError::decode(payload),
        Some(&0xFE) => {
            if let Some((status, warnings)) = terminator_status(payload, payload.len() > 5) {
                summary.status = Some(status);
                summary.warnings = warnings;
            }
        }
        _ => {}
    }
}

/// The client streams a file's contents after a LOCAL INFILE request, ending with an empty
/// packet; the backend then answers with OK or ERR.
async fn relay_local_infile<B, C>(
    backend: &mut PacketStream<B>,
    client: &mut PacketStream<C>,
) -> Result<(), RelayError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    client.flush().await.map_err(RelayError::Client)?;
    loop {
        let frame = client.next_frame().await.map_err(RelayError::Client)?;
        let empty = frame.len == 0;
        client.forward_frame(frame, backend);
        if backend.pending_write() >= FLUSH_AT || empty {
            backend.flush().await.map_err(RelayError::Backend)?;
        }
        if empty {
            return Ok(());
        }
    }
}

/// A client's LOCAL INFILE contents as the proxy kept them.
#[derive(Debug, PartialEq, Eq)]
pub enum InfileCopy {
    /// The server answered without asking for a file.
    NotAsked,
    Data(Vec<u8>),
    /// The file was relayed but was larger than the copy's cap (its size).
    TooLarge(usize),
}

/// When the server's first answer to a command is a LOCAL INFILE request, forwards it to the
/// client, then the client's file to the server, keeping a copy of at most `cap` bytes. The
/// server's final answer (OK or ERR) is left unread. Anything else is left unread too.
pub async fn relay_infile_keeping_copy<B, C>(
    backend: &mut PacketStream<B>,
    client: &mut PacketStream<C>,
    cap: usize,
) -> Result<InfileCopy, RelayError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let frame = backend.next_frame().await.map_err(RelayError::Backend)?;
    if backend.frame_payload(frame).first() != Some(&LOCAL_INFILE_HEADER) {
        return Ok(InfileCopy::NotAsked);
    }
    backend.forward_frame(frame, client);
    client.flush().await.map_err(RelayError::Client)?;
    let mut copy = Vec::new();
    let mut size = 0usize;
    loop {
        let frame = client.next_frame().await.map_err(RelayError::Client)?;
        size += frame.len;
        if size <= cap {
            copy.extend_from_slice(client.frame_payload(frame));
        }
        let empty = frame.len == 0;
        client.forward_frame(frame, backend);
        if backend.pending_write() >= FLUSH_AT || empty {
            backend.flush().await.map_err(RelayError::Backend)?;
        }
        if empty {
            return Ok(if size <= cap {
                InfileCopy::Data(copy)
            } else {
                InfileCopy::TooLarge(size)
            });
        }
    }
}

fn bad(what: &str) -> RelayError {
    RelayError::Backend(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed {what} packet from backend"),
    ))
}

/// An in-memory stand-in for a client: collects (or discards) what a relay writes and reads
/// as end-of-file. Lets the proxy run the response state machine for its own commands
/// (appliers, commit statements) and hold a write's response until its commit is acknowledged.
#[derive(Debug, Default)]
pub struct MemoryIo {
    pub buf: Vec<u8>,
    keep: bool,
}

impl tokio::io::AsyncRead for MemoryIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for MemoryIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.keep {
            me.buf.extend_from_slice(data);
        }
        std::task::Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Reads one command's whole response from `backend` and discards it.
pub async fn read_response<B>(
    backend: &mut PacketStream<B>,
    kind: ResponseKind,
    deprecate_eof: bool,
) -> io::Result<ResponseSummary>
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut sink = PacketStream::new(MemoryIo::default());
    relay_response(backend, &mut sink, kind, deprecate_eof, None)
        .await
        .map_err(|e| match e {
            RelayError::Backend(e) | RelayError::Client(e) => e,
        })
}

/// Reads one command's whole response from `backend` and returns it with its raw frames
/// (headers included), to be sent to the client later with `PacketStream::queue_raw`.
pub async fn buffer_response<B>(
    backend: &mut PacketStream<B>,
    kind: ResponseKind,
    deprecate_eof: bool,
) -> io::Result<(ResponseSummary, Vec<u8>)>
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut sink = PacketStream::new(MemoryIo {
        buf: Vec::new(),
        keep: true,
    });
    let summary = relay_response(backend, &mut sink, kind, deprecate_eof, None)
        .await
        .map_err(|e| match e {
            RelayError::Backend(e) | RelayError::Client(e) => e,
        })?;
    sink.flush().await?;
    let (io, _) = sink.into_parts();
    Ok((summary, io.buf))
}

/// The payload of `raw` when it is exactly one OK frame (a DML statement's answer).
pub fn single_ok_payload(raw: &[u8]) -> Option<&[u8]> {
    if raw.len() < 5 || raw[4] != OK_HEADER {
        return None;
    }
    let len = raw[0] as usize | (raw[1] as usize) << 8 | (raw[2] as usize) << 16;
    (raw.len() == 4 + len).then(|| &raw[4..])
}

/// Rewrites the status flags a buffered whole response (frames as `buffer_response` returns
/// them) leaves the client with: those of its last frame, the OK packet of a DML statement
/// or a CALL, or the terminator of a result set (`INSERT … RETURNING`): an EOF or, with
/// CLIENT_DEPRECATE_EOF, an OK packet with the 0xFE header. Clients take the session's
/// autocommit and transaction state from it (mysqlclient skips `SET autocommit=0` when it
/// believes autocommit is off already). Returns false when `raw` ends otherwise (an error)
/// or is not whole.
pub fn patch_final_status(raw: &mut [u8], status: u16, deprecate_eof: bool) -> bool {
    let Some((last, len)) = frames(raw).last() else {
        return false;
    };
    if last + 4 + len != raw.len() || len < 5 {
        return false;
    }
    match raw[last + 4] {
        OK_HEADER => patch_ok_frame(raw, last, status),
        EOF_HEADER if deprecate_eof => patch_ok_frame(raw, last, status),
        EOF_HEADER => {
            // EOF: header, warnings (2), status (2).
            raw[last + 7..last + 9].copy_from_slice(&status.to_le_bytes());
            true
        }
        _ => false,
    }
}

/// Writes `status` into the OK packet (header 0x00 or 0xFE) framed at `start`.
fn patch_ok_frame(raw: &mut [u8], start: usize, status: u16) -> bool {
    let Some(mut b) = raw.get(start + 5..) else {
        return false;
    };
    let before = b.len();
    if read_lenenc_int(&mut b).is_none() || read_lenenc_int(&mut b).is_none() || b.len() < 2 {
        return false;
    }
    let at = start + 5 + (before - b.len());
    raw[at..at + 2].copy_from_slice(&status.to_le_bytes());
    true
}

impl MemoryIo {
    /// A sink that keeps what is written.
    pub fn keeping() -> MemoryIo {
        MemoryIo {
            buf: Vec::new(),
            keep: true,
        }
    }
}

/// The frames in `raw` as (start offset, payload length), the last possibly cut short.
fn frames(raw: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        (raw.len().saturating_sub(pos) >= 4).then(|| {
            let start = pos;
            let len =
                raw[pos] as usize | (raw[pos + 1] as usize) << 8 | (raw[pos + 2] as usize) << 16;
            pos += 4 + len;
            (start, len)
        })
    })
}

/// Start offsets of the frames in `raw`.
fn frame_starts(raw: &[u8]) -> Vec<usize> {
    frames(raw).map(|(start, _)| start).collect()
}

/// Gives buffered frames consecutive sequence ids from `*seq` on (responses to the
/// statements of one multi-statement text form one response).
pub fn renumber_frames(raw: &mut [u8], seq: &mut u8) {
    for start in frame_starts(raw) {
        raw[start + 3] = *seq;
        *seq = seq.wrapping_add(1);
    }
}

/// Whether the last buffered frame is an ERR packet.
pub fn ends_with_error(raw: &[u8]) -> bool {
    frame_starts(raw)
        .last()
        .is_some_and(|&s| raw.get(s + 4) == Some(&ERR_HEADER))
}

/// Sets SERVER_MORE_RESULTS_EXISTS in the final OK or EOF of a buffered response.
pub fn set_more_results(raw: &mut [u8], deprecate_eof: bool) -> bool {
    let Some(&start) = frame_starts(raw).last() else {
        return false;
    };
    let more = StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits();
    let payload_len = raw.len() - start - 4;
    let header = raw[start + 4];
    if header == OK_HEADER || (header == 0xFE && deprecate_eof && payload_len >= 7) {
        let mut b = &raw[start + 5..];
        let before = b.len();
        if read_lenenc_int(&mut b).is_none() || read_lenenc_int(&mut b).is_none() || b.len() < 2 {
            return false;
        }
        let at = start + 5 + (before - b.len());
        let status = u16::from_le_bytes([raw[at], raw[at + 1]]) | more;
        raw[at..at + 2].copy_from_slice(&status.to_le_bytes());
        true
    } else if header == 0xFE && payload_len == 5 {
        let at = start + 4 + 3;
        let status = u16::from_le_bytes([raw[at], raw[at + 1]]) | more;
        raw[at..at + 2].copy_from_slice(&status.to_le_bytes());
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{encode_ok, encode_terminator};

    /// The payloads framed as a server sends them.
    fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut raw = Vec::new();
        for (seq, p) in payloads.iter().enumerate() {
            raw.extend_from_slice(&(p.len() as u32).to_le_bytes()[..3]);
            raw.push(seq as u8 + 1);
            raw.extend_from_slice(p);
        }
        raw
    }

    /// `INSERT … RETURNING id` answered with one column and two rows, in either dialect.
    fn returning(status: u16, deprecate_eof: bool) -> Vec<u8> {
        let mut payloads = vec![
            vec![1u8],
            b"\x03def\x00\x00\x00\x02id\x00\x0c?\x00".to_vec(),
        ];
        if !deprecate_eof {
            payloads.push(encode_terminator(status, 0, false));
        }
        // A row whose value has an 8-byte length would start with 0xFE too: these do not.
        payloads.push(b"\x017".to_vec());
        payloads.push(b"\x018".to_vec());
        payloads.push(encode_terminator(status, 3, deprecate_eof));
        framed(&payloads)
    }

    const IN_TRANS: u16 = StatusFlags::SERVER_STATUS_IN_TRANS.bits();
    const AUTOCOMMIT: u16 = StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits();

    #[test]
    fn a_result_sets_status_is_rewritten_where_clients_read_it() {
        for deprecate_eof in [false, true] {
            let mut raw = returning(IN_TRANS, deprecate_eof);
            let rows_before: Vec<u8> = raw.clone();
            assert!(patch_final_status(&mut raw, AUTOCOMMIT, deprecate_eof));
            let at: Vec<(usize, usize)> = frames(&raw).collect();
            let payload = |i: usize| &raw[at[i].0 + 4..at[i].0 + 4 + at[i].1];
            let last = at.len() - 1;
            assert_eq!(
                terminator_status(payload(last), deprecate_eof),
                Some((AUTOCOMMIT, 3)),
                "deprecate_eof {deprecate_eof}"
            );
            // Nothing else moved: the same length, the rows as they were.
            assert_eq!(raw.len(), rows_before.len());
            assert_eq!(payload(last - 1), b"\x018");
        }
    }

    /// Relays `raw` as a backend's answer showing `shown`; what the client got, and the summary.
    async fn relayed_showing(
        raw: &[u8],
        deprecate_eof: bool,
        shown: ShownStatus,
    ) -> (Vec<u8>, ResponseSummary) {
        use tokio::io::AsyncWriteExt;
        let (mut server, proxy_end) = tokio::io::duplex(1 << 16);
        server.write_all(raw).await.expect("write the answer");
        let mut backend = PacketStream::new(proxy_end);
        let mut client = PacketStream::new(MemoryIo::keeping());
        let summary = relay_response_showing(
            &mut backend,
            &mut client,
            ResponseKind::ResultSets,
            deprecate_eof,
            shown,
        )
        .await
        .expect("relayed");
        (client.into_parts().0.buf, summary)
    }

    #[tokio::test]
    async fn an_answer_relayed_showing_the_sessions_status_keeps_all_else() {
        // A read run in autocommit for a session whose client is in a transaction.
        let shown = ShownStatus {
            mask: AUTOCOMMIT | IN_TRANS,
            bits: AUTOCOMMIT | IN_TRANS,
        };
        let more = StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits();
        let nbe = StatusFlags::SERVER_STATUS_NO_BACKSLASH_ESCAPES.bits();
        for deprecate_eof in [false, true] {
            let raw = returning(AUTOCOMMIT | nbe, deprecate_eof);
            let (got, summary) = relayed_showing(&raw, deprecate_eof, shown).await;
            let at: Vec<(usize, usize)> = frames(&got).collect();
            let payload = |i: usize| &got[at[i].0 + 4..at[i].0 + 4 + at[i].1];
            let last = at.len() - 1;
            let want = AUTOCOMMIT | IN_TRANS | nbe;
            assert_eq!(
                terminator_status(payload(last), deprecate_eof),
                Some((want, 3))
            );
            assert_eq!(summary.status, Some(want));
            if !deprecate_eof {
                // The EOF after the column definitions too.
                assert_eq!(terminator_status(payload(2), false), Some((want, 0)));
            }
            // Rows and lengths as the server sent them, and only the status bytes differ.
            assert_eq!(got.len(), raw.len());
            assert_eq!(payload(last - 1), b"\x018");
            let differing = got.iter().zip(&raw).filter(|(a, b)| a != b).count();
            assert_eq!(differing, if deprecate_eof { 1 } else { 2 });
        }
        // An OK (with more results after it) and an error.
        let ok = |status| {
            encode_ok(
                OkInfo {
                    affected_rows: 0,
                    last_insert_id: 300,
                    status,
                    warnings: 2,
                },
                b"",
            )
        };
        let off = ShownStatus {
            mask: AUTOCOMMIT | IN_TRANS,
            bits: 0,
        };
        let raw = framed(&[ok(AUTOCOMMIT | more), ok(AUTOCOMMIT)]);
        let (got, summary) = relayed_showing(&raw, false, off).await;
        let at: Vec<(usize, usize)> = frames(&got).collect();
        let first = OkInfo::decode(&got[at[0].0 + 4..]).expect("an OK");
        assert_eq!(
            (first.status, first.last_insert_id, first.warnings),
            (more, 300, 2)
        );
        assert_eq!(summary.ok.map(|o| o.status), Some(0));
        assert_eq!(summary.status, Some(0));
        let err = framed(&[MysqlError::new(1146, "42S02", "Table 'x.y' doesn't exist").encode()]);
        let (got, summary) = relayed_showing(&err, false, off).await;
        assert_eq!(got, err);
        assert_eq!(summary.error.map(|e| e.code), Some(1146));
    }

    #[test]
    fn a_single_ok_is_rewritten_and_anything_else_is_left_alone() {
        let ok = encode_ok(
            OkInfo {
                affected_rows: 300,
                last_insert_id: 70_000,
                status: IN_TRANS,
                warnings: 1,
            },
            b"Records: 3",
        );
        let mut raw = framed(&[ok]);
        assert!(patch_final_status(&mut raw, AUTOCOMMIT, true));
        let info = OkInfo::decode(&raw[4..]).expect("an OK packet");
        assert_eq!((info.affected_rows, info.last_insert_id), (300, 70_000));
        assert_eq!((info.status, info.warnings), (AUTOCOMMIT, 1));
        // An error, and a result set cut short, are not touched.
        let mut err = framed(&[MysqlError::new(1213, "40001", "Deadlock").encode()]);
        let before = err.clone();
        assert!(!patch_final_status(&mut err, AUTOCOMMIT, false));
        assert_eq!(err, before);
        let mut cut = returning(IN_TRANS, false);
        cut.truncate(cut.len() - 2);
        let before = cut.clone();
        assert!(!patch_final_status(&mut cut, AUTOCOMMIT, false));
        assert_eq!(cut, before);
    }
}
