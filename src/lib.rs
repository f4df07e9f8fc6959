//! myquorum: a MySQL wire-protocol proxy.
//!
//! Module map (who may import whom):
//! - `protocol`   packets on mysql_common, both sides; imports nothing of ours.
//! - `sql`        classification, lexing, SET parsing; pure, no tokio.
//! - `router`     (Classified, Topology, Session view) → `Route` value; pure.
//! - `session`    per-client state and pin reasons; imports sql, protocol::relay summary.
//! - `backend`    the only module that opens backend connections (data path pools, control
//!   path health probes); imports protocol, config, router ids.
//! - `executor`   gets a route's connection and restores session state on it; `write` runs a
//!   replicated write's command sequences on the primary.
//! - `frontend`   client connections and the command loop; the only module that talks to clients.
//! - `tso`        the odd/even timestamp servers and the pair client; std + tokio only.
//! - `wal`        per-shard segment files, CRC32C framing, group-commit writer thread.
//! - `replication` sequencer, Cabinet quorum, appliers, recovery; imports wal, tso, backend,
//!   protocol, router ids.
//! - `metrics`    latency histograms; imports nothing of ours.
//! - `admin`      results of proxy-answered statements.
//! - `server`     accept loop and shutdown.  `context`: shared state.  `config`: settings.
//! - `playground` local mariadbd processes for trying the proxy.

pub mod admin;
pub mod backend;
pub mod config;
pub mod context;
pub mod digests;
pub mod executor;
pub mod frontend;
pub mod metrics;
pub mod playground;
pub mod protocol;
pub mod replication;
pub mod router;
pub mod server;
pub mod session;
pub mod sql;
pub mod tso;
pub mod wal;
