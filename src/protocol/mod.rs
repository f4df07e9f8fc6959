//! The MySQL wire protocol on `mysql_common`, both sides: framing, connection phase, the
//! packets the proxy reads or writes itself, and the relay of backend responses. The only
//! module that encodes or decodes packets.
//!
//! May import: mysql_common, tokio io. Must not import: backend, frontend, session.

pub mod execute;
pub mod handshake;
pub mod message;
pub mod packet;
pub mod relay;
pub mod resultset;

pub use message::MysqlError;
pub use packet::PacketStream;
