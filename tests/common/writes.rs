//! One distinct-id write as the fault tests issue them: every third in an explicit
//! transaction, the others autocommit, so both commit paths are exercised; and the check
//! that every acknowledged id is on every replica.

use super::MariaDb;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::collections::BTreeSet;

/// Inserts `id` into `table` (columns id, note); `Ok` means the proxy acknowledged it.
pub async fn insert_id(c: &mut Conn, table: &str, id: i64, n: i64) -> mysql_async::Result<()> {
    if n % 3 == 0 {
        c.query_drop("BEGIN").await?;
        c.query_drop(format!("INSERT INTO {table} VALUES ({id}, 'tx')"))
            .await?;
        c.query_drop("COMMIT").await
    } else {
        c.query_drop(format!("INSERT INTO {table} VALUES ({id}, 'auto')"))
            .await
    }
}

/// Asserts every id in `acked` is in `table` on each of `dbs` (no acknowledged write lost).
pub async fn assert_holds_acked(dbs: &[&MariaDb], table: &str, acked: &BTreeSet<i64>) {
    for db in dbs {
        let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
            .await
            .unwrap();
        let have: Vec<i64> = c.query(format!("SELECT id FROM {table}")).await.unwrap();
        let have: BTreeSet<i64> = have.into_iter().collect();
        let lost: Vec<_> = acked.difference(&have).take(5).collect();
        assert!(
            lost.is_empty(),
            "{} lost acknowledged writes, e.g. {lost:?}",
            db.addr()
        );
    }
}
