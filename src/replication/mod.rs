//! Replication: the sequencer (timestamp + WAL append as one step per shard), the Cabinet
//! quorum, one applier per follower, and recovery.
//!
//! Owns: the log's in-memory tail and each replica's applied position. May import: wal, tso,
//! backend (applier connections), protocol (reading responses), router ids, config.

pub mod cabinet;
pub mod record;
