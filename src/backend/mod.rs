//! Backend connections: the only module that opens connections to database servers.
//! Data path: raw pooled connections relayed packet by packet (`conn`, `pool`).
//! Control path: mysql_async for health probes (`health`), replica rebuilds (`copy`), the
//! table definitions writes depend on (`schema_facts`) and table maintenance every replica
//! runs (`maintenance`).
//!
//! May import: protocol, config, session (signatures), sql (quoting). Must not import:
//! frontend.

pub mod cluster;
pub mod conn;
pub mod copy;
pub mod health;
pub mod maintenance;
pub mod pool;
pub mod schema_facts;
pub mod tls;

pub use cluster::Cluster;
pub use conn::{BackendAccount, BackendConn, ConnectParams};
pub use pool::BackendPool;
