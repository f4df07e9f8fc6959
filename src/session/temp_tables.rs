//! The session's temporary tables, by schema and name: a statement that touches only these
//! stays on the primary (followers never have them), so a regular table must never be taken
//! for one. Names compare exactly, as MariaDB's default `lower_case_table_names = 0` on
//! Linux does; a temporary table created in one schema does not hide a same-named table in
//! another.
//!
//! Owns: `TempTables`. May import: sql (the name changes a DDL makes, the lexer).

use crate::sql::lexer::{Lexer, Tok};
use crate::sql::{qualified_name as qualify, TableNameChanges};

#[derive(Debug, Default, Clone)]
pub struct TempTables(Vec<(Option<String>, String)>);

impl TempTables {
    /// Whether `reference` (as written in a statement, maybe `db.t` or quoted) names one of
    /// them while `schema` is the session's current one.
    pub fn contains(&self, reference: &str, schema: Option<&str>) -> bool {
        // Every write asks for each table it names; most sessions have none.
        if self.0.is_empty() {
            return false;
        }
        let key = qualify(reference, schema);
        self.0.contains(&key)
    }

    /// The first of these tables that one of `words` names, in any schema: for a text whose
    /// tables the proxy could not list (a program, a statement the parser rejects), where
    /// any mention may be that table, hiding a regular one of the same name on the primary.
    pub fn first_named<'w>(&self, words: impl IntoIterator<Item = &'w str>) -> Option<&str> {
        if self.0.is_empty() {
            return None;
        }
        words
            .into_iter()
            .find_map(|w| self.0.iter().find(|(_, name)| name == w))
            .map(|(_, name)| name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Follows a DDL the primary ran successfully.
    pub fn follow(&mut self, changes: &TableNameChanges, schema: Option<&str>) {
        for created in &changes.created_temporary {
            let key = qualify(created, schema);
            if !self.0.contains(&key) {
                self.0.push(key);
            }
        }
        for dropped in &changes.dropped {
            // A DROP of a name that is both takes the temporary table, as on the server.
            self.remove(dropped, schema);
        }
        for (old, new) in &changes.renamed {
            if self.remove(old, schema) {
                self.0.push(qualify(new, schema));
            }
        }
    }

    fn remove(&mut self, reference: &str, schema: Option<&str>) -> bool {
        let key = qualify(reference, schema);
        let before = self.0.len();
        self.0.retain(|k| *k != key);
        self.0.len() != before
    }
}

/// The words and quoted identifiers of `sql`: what may name a table.
pub fn identifiers(sql: &str) -> impl Iterator<Item = &str> {
    Lexer::new(sql).filter_map(|t| match t.tok {
        Tok::Word(w) | Tok::Quoted(w) => Some(w),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::table_name_changes;

    fn after(statements: &[&str], schema: &str) -> TempTables {
        let mut t = TempTables::default();
        for sql in statements {
            t.follow(&table_name_changes(sql), Some(schema));
        }
        t
    }

    #[test]
    fn a_table_read_while_creating_one_is_not_temporary() {
        let t = after(
            &["CREATE TEMPORARY TABLE tmp AS SELECT s.id FROM source s WHERE s.v > 1"],
            "app",
        );
        assert!(t.contains("tmp", Some("app")));
        assert!(t.contains("app.tmp", Some("other")));
        assert!(t.contains("`app`.`tmp`", None));
        assert!(!t.contains("source", Some("app")));
    }

    #[test]
    fn names_are_per_schema_and_exact() {
        let t = after(&["CREATE TEMPORARY TABLE tmp (a INT)"], "app");
        assert!(!t.contains("tmp", Some("other")));
        assert!(!t.contains("other.tmp", Some("app")));
        assert!(!t.contains("TMP", Some("app")));
        let q = after(&["CREATE TEMPORARY TABLE `we``ird`.`a.b` (a INT)"], "app");
        assert!(q.contains("`we``ird`.`a.b`", None));
        assert!(!q.contains("a", Some("we`ird")));
    }

    #[test]
    fn drops_and_renames_are_followed() {
        let t = after(
            &[
                "CREATE TEMPORARY TABLE t1 (a INT)",
                "CREATE OR REPLACE TEMPORARY TABLE IF NOT EXISTS t2 (a INT)",
                "CREATE TEMPORARY TABLE t3 (a INT)",
                "DROP TEMPORARY TABLE IF EXISTS t1",
                "ALTER TABLE t2 RENAME TO t4",
                "RENAME TABLE t3 TO t5, regular TO regular2",
            ],
            "app",
        );
        for gone in ["t1", "t2", "t3", "regular", "regular2"] {
            assert!(!t.contains(gone, Some("app")), "{gone}");
        }
        assert!(t.contains("t4", Some("app")));
        assert!(t.contains("t5", Some("app")));
        // Not a table drop: the temporary table is still there.
        let kept = after(
            &["CREATE TEMPORARY TABLE t1 (a INT)", "DROP INDEX i ON t1"],
            "app",
        );
        assert!(kept.contains("t1", Some("app")));
    }

    #[test]
    fn a_text_naming_a_temporary_table_in_any_schema_is_found() {
        let t = after(&["CREATE TEMPORARY TABLE f.t (id INT)"], "app");
        let named = |sql| t.first_named(identifiers(sql)).map(str::to_string);
        assert_eq!(
            named("REPEAT DELETE FROM f.t WHERE id = 1; UNTIL 1 END REPEAT"),
            Some("t".to_string())
        );
        assert_eq!(
            named("IF 1 THEN DELETE FROM `t`; END IF"),
            Some("t".to_string())
        );
        assert_eq!(named("IF 1 THEN DELETE FROM f.u; END IF"), None);
        // A string is no name; names compare exactly (lower_case_table_names = 0).
        assert_eq!(
            named("IF 1 THEN INSERT INTO f.u VALUES ('t'); END IF"),
            None
        );
        assert_eq!(named("IF 1 THEN DELETE FROM T; END IF"), None);
        assert_eq!(
            TempTables::default().first_named(identifiers("DELETE FROM t")),
            None
        );
    }
}
