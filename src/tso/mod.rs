//! The timestamp pair: two servers, one issuing odd and one even timestamps,
//! ts = (k << 1) | parity with k = max(k_last + 1, physical_ms << LOGICAL_BITS, (hint >> 1) + 1),
//! so a shard's sequence strictly increases whichever server answers. Each server persists a
//! high-water mark of k ahead of what it hands out (a window, as TiDB PD does) and resumes above
//! it after a restart: a timestamp is never reissued.
//!
//! `TsoPair` is the sequencer's client: it asks its preferred server for a batch and fails over
//! to the other when one stops answering, without a visible error. Servers are in-process by
//! default or remote (`myquorum tso`, a one-line text protocol: `TS <count> <hint>` →
//! `OK <first>`; the batch is first, first + 2, …).
//!
//! Durability: `TsoServer::issue` returns only after any needed high-water write is synced.
//! Owns: the state file of each in-process server. May import: std, tokio.

use parking_lot::Mutex;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Logical bits below the physical milliseconds (as TiDB: 2^18 per ms).
pub const LOGICAL_BITS: u32 = 18;
/// How far ahead of what it hands out a server persists its high-water mark.
const WINDOW_MS: u64 = 3000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    Even = 0,
    Odd = 1,
}

impl std::str::FromStr for Parity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "odd" => Ok(Parity::Odd),
            "even" => Ok(Parity::Even),
            _ => Err(format!("parity must be odd or even, not {s:?}")),
        }
    }
}

fn physical_k() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms << LOGICAL_BITS
}

/// The wall-clock milliseconds a timestamp was issued at (approximately).
pub fn physical_ms(ts: u64) -> u64 {
    (ts >> 1) >> LOGICAL_BITS
}

/// One timestamp server.
pub struct TsoServer {
    parity: Parity,
    k_last: u64,
    high_water: u64,
    state: PathBuf,
}

impl TsoServer {
    /// Opens the server with its state file (created if missing); it resumes above the
    /// persisted high-water mark.
    pub fn open(parity: Parity, state: &Path) -> io::Result<TsoServer> {
        let high_water = match fs::read_to_string(state) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "timestamp state file {} is unreadable ({e}); it must hold one number",
                        state.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if let Some(dir) = state.parent() {
            fs::create_dir_all(dir)?;
        }
        Ok(TsoServer {
            parity,
            k_last: high_water,
            high_water,
            state: state.to_path_buf(),
        })
    }

    pub fn parity(&self) -> Parity {
        self.parity
    }

    /// Issues `count` timestamps above `hint` and returns the first; the rest follow in
    /// steps of 2.
    pub fn issue(&mut self, count: u32, hint: u64) -> io::Result<u64> {
        let count = u64::from(count.max(1));
        let k = (self.k_last + 1)
            .max(physical_k())
            .max((hint >> 1).saturating_add(1));
        let last = k + count - 1;
        if last > self.high_water {
            let hw = last.max(physical_k()) + (WINDOW_MS << LOGICAL_BITS);
            persist(&self.state, hw)?;
            self.high_water = hw;
        }
        self.k_last = last;
        Ok((k << 1) | self.parity as u64)
    }
}

fn persist(path: &Path, value: u64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{value}")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// One of the pair, as the sequencer reaches it.
pub enum TsoEndpoint {
    Local(Arc<Mutex<TsoServer>>),
    Remote {
        addr: String,
        conn: tokio::sync::Mutex<Option<BufReader<TcpStream>>>,
    },
}

impl TsoEndpoint {
    pub fn remote(addr: &str) -> TsoEndpoint {
        TsoEndpoint::Remote {
            addr: addr.to_string(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    fn name(&self) -> String {
        match self {
            TsoEndpoint::Local(s) => format!("in-process {:?}", s.lock().parity()),
            TsoEndpoint::Remote { addr, .. } => addr.clone(),
        }
    }

    async fn issue(&self, count: u32, hint: u64) -> io::Result<u64> {
        match self {
            TsoEndpoint::Local(s) => s.lock().issue(count, hint),
            TsoEndpoint::Remote { addr, conn } => {
                let mut guard = conn.lock().await;
                if guard.is_none() {
                    let tcp = TcpStream::connect(addr).await?;
                    tcp.set_nodelay(true)?;
                    *guard = Some(BufReader::new(tcp));
                }
                let result = async {
                    let stream = guard
                        .as_mut()
                        .ok_or_else(|| io::Error::other("no connection"))?;
                    stream
                        .get_mut()
                        .write_all(format!("TS {count} {hint}\n").as_bytes())
                        .await?;
                    let mut line = String::new();
                    if stream.read_line(&mut line).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "timestamp server closed the connection",
                        ));
                    }
                    parse_reply(&line)
                }
                .await;
                if result.is_err() {
                    *guard = None;
                }
                result
            }
        }
    }
}

fn parse_reply(line: &str) -> io::Result<u64> {
    let line = line.trim();
    if let Some(v) = line.strip_prefix("OK ") {
        return v
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad timestamp reply"));
    }
    Err(io::Error::other(format!("timestamp server: {line}")))
}

/// The sequencer's view of the pair.
pub struct TsoPair {
    endpoints: [TsoEndpoint; 2],
    preferred: AtomicUsize,
    timeout: Duration,
}

impl TsoPair {
    pub fn new(a: TsoEndpoint, b: TsoEndpoint, timeout: Duration) -> TsoPair {
        TsoPair {
            endpoints: [a, b],
            preferred: AtomicUsize::new(0),
            timeout,
        }
    }

    /// An in-process pair with state files `dir/tso-odd.state` and `dir/tso-even.state`.
    pub fn in_process(dir: &Path) -> io::Result<TsoPair> {
        let odd = TsoServer::open(Parity::Odd, &dir.join("tso-odd.state"))?;
        let even = TsoServer::open(Parity::Even, &dir.join("tso-even.state"))?;
        Ok(TsoPair::new(
            TsoEndpoint::Local(Arc::new(Mutex::new(odd))),
            TsoEndpoint::Local(Arc::new(Mutex::new(even))),
            Duration::from_millis(500),
        ))
    }

    /// `count` timestamps above `hint`: the first, the rest in steps of 2. Tries the
    /// preferred server, then the other; only when both fail is there an error.
    pub async fn issue(&self, count: u32, hint: u64) -> io::Result<u64> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_err = None;
        for i in [first, 1 - first] {
            let ep = &self.endpoints[i];
            match tokio::time::timeout(self.timeout, ep.issue(count, hint)).await {
                Ok(Ok(ts)) if ts > hint => {
                    if i != first {
                        tracing::warn!(to = %ep.name(), "timestamp server failover");
                        self.preferred.store(i, Ordering::Relaxed);
                    }
                    return Ok(ts);
                }
                Ok(Ok(ts)) => {
                    last_err = Some(io::Error::other(format!(
                        "timestamp server {} answered {ts}, not above {hint}",
                        ep.name()
                    )))
                }
                Ok(Err(e)) => last_err = Some(e),
                Err(_) => {
                    last_err = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("timestamp server {} did not answer", ep.name()),
                    ))
                }
            }
            tracing::debug!(server = %ep.name(), error = ?last_err, "timestamp server failed");
        }
        Err(io::Error::other(format!(
            "both timestamp servers failed (last: {}); start them (`myquorum tso`) or check [tso] servers",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        )))
    }
}

/// Serves one timestamp server on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Mutex<TsoServer>>,
    cancel: tokio_util::sync::CancellationToken,
) -> io::Result<()> {
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = cancel.cancelled() => return Ok(()),
        };
        let server = server.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            let (r, mut w) = sock.into_split();
            let mut lines = BufReader::new(r).lines();
            loop {
                let line = tokio::select! {
                    l = lines.next_line() => l,
                    _ = cancel.cancelled() => return,
                };
                let Ok(Some(line)) = line else { return };
                let reply = answer(&server, &line);
                if w.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        tracing::debug!(%peer, "timestamp client connected");
    }
}

fn answer(server: &Mutex<TsoServer>, line: &str) -> String {
    let mut parts = line.split_whitespace();
    let (Some("TS"), Some(count), Some(hint), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return "ERR expected: TS <count> <hint>\n".into();
    };
    let (Ok(count), Ok(hint)) = (count.parse::<u32>(), hint.parse::<u64>()) else {
        return "ERR count and hint must be numbers\n".into();
    };
    match server.lock().issue(count, hint) {
        Ok(ts) => format!("OK {ts}\n"),
        Err(e) => format!("ERR {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_with_parity_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let mut odd = TsoServer::open(Parity::Odd, &dir.path().join("o")).unwrap();
        let mut prev = 0;
        for _ in 0..10_000 {
            let ts = odd.issue(1, 0).unwrap();
            assert_eq!(ts & 1, 1);
            assert!(ts > prev);
            prev = ts;
        }
        // A batch of 5 spans 5 values of k.
        let first = odd.issue(5, 0).unwrap();
        let next = odd.issue(1, 0).unwrap();
        assert_eq!(next, first + 10);
        // The hint lifts a server whose clock is behind.
        let far = prev + (1 << 40);
        let ts = odd.issue(1, far).unwrap();
        assert!(ts > far);
        let ts2 = odd.issue(1, 0).unwrap();
        assert!(ts2 > ts);
    }

    #[test]
    fn restart_never_reissues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("even.state");
        let mut s = TsoServer::open(Parity::Even, &path).unwrap();
        let mut last = 0;
        for _ in 0..1000 {
            last = s.issue(1, 0).unwrap();
        }
        // Far past the wall clock (as if the clock stepped back after the restart).
        last = last.max(
            s.issue(1, (physical_k() + (10 << LOGICAL_BITS)) << 1)
                .unwrap(),
        );
        drop(s);
        let mut s = TsoServer::open(Parity::Even, &path).unwrap();
        let ts = s.issue(1, 0).unwrap();
        assert!(ts > last, "{ts} after restart <= {last}");
        assert_eq!(ts & 1, 0);
    }

    #[tokio::test]
    async fn pair_fails_over_and_stays_monotonic() {
        let dir = tempfile::tempdir().unwrap();
        let odd = Arc::new(Mutex::new(
            TsoServer::open(Parity::Odd, &dir.path().join("odd")).unwrap(),
        ));
        let even = Arc::new(Mutex::new(
            TsoServer::open(Parity::Even, &dir.path().join("even")).unwrap(),
        ));
        let cancel_odd = tokio_util::sync::CancellationToken::new();
        let lo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let le = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ao, ae) = (lo.local_addr().unwrap(), le.local_addr().unwrap());
        let odd_task = tokio::spawn(serve(lo, odd, cancel_odd.clone()));
        let cancel_even = tokio_util::sync::CancellationToken::new();
        tokio::spawn(serve(le, even, cancel_even.clone()));
        let pair = TsoPair::new(
            TsoEndpoint::remote(&ao.to_string()),
            TsoEndpoint::remote(&ae.to_string()),
            Duration::from_millis(300),
        );
        let mut last = 0;
        for _ in 0..100 {
            let ts = pair.issue(1, last).await.unwrap();
            assert!(ts > last);
            assert_eq!(ts & 1, 1, "the preferred (odd) server answers");
            last = ts;
        }
        // Stop the odd server: the next request fails over to the even one, no error.
        cancel_odd.cancel();
        odd_task.await.unwrap().unwrap();
        for _ in 0..100 {
            let ts = pair.issue(3, last).await.unwrap();
            assert!(ts > last);
            assert_eq!(ts & 1, 0);
            last = ts + 4;
        }
        cancel_even.cancel();
        assert!(pair.issue(1, last).await.is_err());
    }
}
