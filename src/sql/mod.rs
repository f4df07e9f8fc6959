//! SQL understanding without I/O: lexing, classification, SET parsing.
//!
//! Owns: everything the proxy learns from statement text. May import: sqlparser, std.
//! Must not import: tokio, protocol, backend.

pub mod accounts;
pub mod binlog;
pub mod cache;
pub mod classify;
pub mod determinism;
pub mod diagnostics;
pub mod lexer;
pub mod like;
pub mod prepare;
pub mod replicated_settings;
pub mod rewrite;
pub mod set;
pub mod user_vars;

pub use cache::ClassifyCache;
pub use classify::{classify, table_name_changes, Classified, Flags, Kind, TableNameChanges};
pub use set::SessionChange;

/// `s` as a single-quoted string literal (backslashes and quotes escaped), for statements the
/// proxy writes itself.
pub fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `s` as a backquoted identifier.
pub fn quote_identifier(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}
