//! A TCP relay in front of one backend, for fault tests (there is no netem here): it can add a
//! delay to every chunk in both directions, blackhole traffic (accept, forward nothing), or cut
//! every connection. Plain threads, so it works under any test runtime.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Faults {
    delay_ms: AtomicU64,
    blackhole: AtomicBool,
    stopped: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

pub struct Relay {
    pub port: u16,
    faults: Arc<Faults>,
}

impl Relay {
    /// Listens on a free loopback port and forwards to `target` ("host:port").
    pub fn start(target: String) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", super::free_port())).unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if f.stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    f.open.lock().unwrap().extend([c, s]);
                }
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    f.clone(),
                );
                pump(server, client, f.clone());
            }
        });
        Relay { port, faults }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Adds `ms` to every chunk each way (0: none).
    pub fn set_delay_ms(&self, ms: u64) {
        self.faults.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Stops forwarding (connections stay open, nothing arrives): a hung server.
    pub fn set_blackhole(&self, on: bool) {
        self.faults.blackhole.store(on, Ordering::Relaxed);
    }

    /// Closes every relayed connection (new ones are still accepted).
    pub fn cut(&self) {
        for s in self.faults.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.faults.stopped.store(true, Ordering::Relaxed);
        self.cut();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, f: Arc<Faults>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while f.blackhole.load(Ordering::Relaxed) && !f.stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let delay = f.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
