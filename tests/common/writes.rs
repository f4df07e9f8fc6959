//! One distinct-id write as the fault tests issue them: every third in an explicit
//! transaction, the others autocommit, so both commit paths are exercised.

use mysql_async::prelude::*;
use mysql_async::Conn;

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
