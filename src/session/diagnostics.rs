//! The diagnostics of a session's last replicated write, kept by the proxy: the proxy's own
//! statements after the write on the primary's connection (the record's `myquorum.wal`
//! INSERT, COMMIT, the clock reset) clear the server's warning list and zero its
//! ROW_COUNT(), so SHOW WARNINGS, `@@warning_count` and ROW_COUNT() are answered from here
//! instead (MySQL's semantics: kept until the next statement, which is not one of these).
//! Likewise after a relayed statement with warnings whose list the proxy read itself (it
//! looks for `left_without_database`): its SHOW WARNINGS set the server's ROW_COUNT() to -1.
//!
//! Owns: `Diagnostics` and the answers it gives. May import: sql::diagnostics,
//! protocol::resultset (column kinds and rows).

use crate::protocol::resultset::{ColumnKind, TextRow};
use crate::sql::diagnostics::{DiagnosticsQuery, DiagnosticsValue};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// What ROW_COUNT() returns: the write's affected rows, -1 after a result set.
    pub row_count: i64,
    /// The warning count the write's answer carried (may exceed the rows kept, as the
    /// server's `max_error_count` caps SHOW WARNINGS but not the count).
    pub warning_count: u16,
    /// (Level, Code, Message) as SHOW WARNINGS listed them on the primary.
    pub warnings: Vec<TextRow>,
}

/// A result set the proxy answers: named, typed columns and text rows.
pub struct Answer {
    pub columns: Vec<(String, ColumnKind)>,
    pub rows: Vec<TextRow>,
}

impl Diagnostics {
    fn is_error(row: &TextRow) -> bool {
        row.first()
            .and_then(|l| l.as_deref())
            .is_some_and(|l| l.eq_ignore_ascii_case("Error"))
    }

    /// Whether the statement left the connection without a default database: MariaDB's
    /// Note 1049 (Unknown database) after a stored routine or trigger ran in its own
    /// database and could not switch back to the session's, which another session dropped
    /// meanwhile. The server clears the connection's database then, so DATABASE() is NULL
    /// and unqualified names fail with 1046 from the next statement on.
    pub fn left_without_database(&self) -> bool {
        self.warnings.iter().any(|r| {
            r.first()
                .and_then(|l| l.as_deref())
                .is_some_and(|l| l.eq_ignore_ascii_case("Note"))
                && r.get(1).and_then(|c| c.as_deref()) == Some("1049")
        })
    }

    fn error_count(&self) -> usize {
        self.warnings.iter().filter(|r| Self::is_error(r)).count()
    }

    /// The answer to `q`, as the server would give it right after the write.
    pub fn answer(&self, q: &DiagnosticsQuery) -> Answer {
        match q {
            DiagnosticsQuery::List {
                errors_only,
                offset,
                limit,
            } => Answer {
                columns: vec![
                    ("Level".into(), ColumnKind::Text),
                    ("Code".into(), ColumnKind::UnsignedInt),
                    ("Message".into(), ColumnKind::Text),
                ],
                rows: self
                    .warnings
                    .iter()
                    .filter(|r| !errors_only || Self::is_error(r))
                    .skip(*offset as usize)
                    .take(limit.map_or(usize::MAX, |l| l as usize))
                    .cloned()
                    .collect(),
            },
            DiagnosticsQuery::Count { errors_only } => {
                let (name, n) = if *errors_only {
                    ("@@session.error_count", self.error_count() as i64)
                } else {
                    ("@@session.warning_count", i64::from(self.warning_count))
                };
                Answer {
                    columns: vec![(name.into(), ColumnKind::Int)],
                    rows: vec![vec![Some(n.to_string())]],
                }
            }
            DiagnosticsQuery::Values(items) => Answer {
                columns: items
                    .iter()
                    .map(|(_, name)| (name.clone(), ColumnKind::Int))
                    .collect(),
                rows: vec![items
                    .iter()
                    .map(|(v, _)| {
                        let n = match v {
                            DiagnosticsValue::WarningCount => i64::from(self.warning_count),
                            DiagnosticsValue::ErrorCount => self.error_count() as i64,
                            DiagnosticsValue::RowCount => self.row_count,
                        };
                        Some(n.to_string())
                    })
                    .collect()],
            },
        }
    }

    /// The diagnostics after the statement that read them: the same warnings (reading them
    /// does not clear them), and ROW_COUNT() -1 as after any result set.
    pub fn after_reading(self) -> Diagnostics {
        Diagnostics {
            row_count: -1,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::diagnostics::parse;

    fn row(level: &str, code: u16, msg: &str) -> TextRow {
        vec![Some(level.into()), Some(code.to_string()), Some(msg.into())]
    }

    fn diagnostics() -> Diagnostics {
        Diagnostics {
            row_count: 3,
            warning_count: 3,
            warnings: vec![
                row("Warning", 1265, "Data truncated for column 'v' at row 1"),
                row("Note", 1051, "Unknown table 'x'"),
                row("Warning", 1366, "Incorrect integer value"),
            ],
        }
    }

    fn values(sql: &str) -> Vec<Option<String>> {
        let q = parse(sql).expect("a diagnostics statement");
        diagnostics().answer(&q).rows.remove(0)
    }

    #[test]
    fn lists_and_limits_the_warnings() {
        let d = diagnostics();
        let all = d.answer(&parse("SHOW WARNINGS").expect("parsed"));
        assert_eq!(all.rows, d.warnings);
        assert_eq!(all.columns[1], ("Code".into(), ColumnKind::UnsignedInt));
        let some = d.answer(&parse("SHOW WARNINGS LIMIT 1, 1").expect("parsed"));
        assert_eq!(some.rows, vec![d.warnings[1].clone()]);
        assert!(d
            .answer(&parse("SHOW ERRORS").expect("parsed"))
            .rows
            .is_empty());
    }

    #[test]
    fn counts_and_row_count() {
        assert_eq!(values("SHOW COUNT(*) WARNINGS"), vec![Some("3".into())]);
        assert_eq!(values("SHOW COUNT(*) ERRORS"), vec![Some("0".into())]);
        assert_eq!(
            values("SELECT ROW_COUNT(), @@warning_count, @@error_count"),
            vec![Some("3".into()), Some("3".into()), Some("0".into())]
        );
        let after = diagnostics().after_reading();
        let q = parse("SELECT ROW_COUNT()").expect("parsed");
        assert_eq!(after.answer(&q).rows, vec![vec![Some("-1".into())]]);
        assert_eq!(after.warnings, diagnostics().warnings);
    }

    #[test]
    fn a_routine_that_could_not_switch_back_left_no_database() {
        assert!(!diagnostics().left_without_database());
        let mut d = diagnostics();
        d.warnings.push(row("Note", 1049, "Unknown database 'zz'"));
        assert!(d.left_without_database());
        // An error of that code is the statement's own (USE of a missing database).
        d.warnings.pop();
        d.warnings.push(row("Error", 1049, "Unknown database 'zz'"));
        assert!(!d.left_without_database());
    }
}
