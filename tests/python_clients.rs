//! PyMySQL and SQLAlchemy through the proxy read exactly what they read direct, ids from a
//! sequence included; a Django application migrates and runs through the proxy as it does
//! direct, and its tables are the same on every replica.

mod common;

use common::{config_for, repo_path, MariaDb, Proxy};
use std::process::Command;

fn run_script(port: u16, db: &str) -> String {
    run_python("orm_roundtrip.py", port, db)
}

fn run_python(script: &str, port: u16, db: &str) -> String {
    let out = Command::new("python3")
        .arg(repo_path(&format!("tests/python/{script}")))
        .arg(port.to_string())
        .arg(db)
        .output()
        .expect("python3 must be installed, with PyMySQL, SQLAlchemy and Django (see .ci/run)");
    assert!(
        out.status.success(),
        "{script} on port {port} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pymysql_and_sqlalchemy_match_direct() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let via = run_script(proxy.port, "through_proxy");
    let direct = run_script(db.port, "direct");
    assert!(via.contains("sqlalchemy.rows"));
    // Ids from a sequence, as SQLAlchemy takes them (`SELECT nextval(items_seq) AS …`).
    assert!(via.contains(r#"["sqlalchemy.sequence_key", [4]]"#), "{via}");
    assert!(via.contains(r#"["sqlalchemy.next_value", 5]"#), "{via}");
    // SHOW PROCESSLIST's Id is the client's thread id (an int), and kill() ends it.
    assert!(
        via.contains(r#"["processlist.lists_thread_id", true]"#),
        "{via}"
    );
    assert!(
        via.contains(r#"["kill.ended_the_connection", true]"#),
        "{via}"
    );
    assert_eq!(via, direct);
}

/// Django 5 on PyMySQL: `migrate` of contrib.auth, contenttypes and an app of its own (then
/// a second migration on tables with rows), and what an application does with the ORM
/// (atomic blocks and their savepoints, select_for_update, get_or_create, bulk_create, F
/// expressions, aggregates, JSON lookups, a cascading delete, auth users and permissions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_migrates_and_matches_direct() {
    common::init_tracing();
    let (a, b, c, direct) = (
        MariaDb::start(),
        MariaDb::start(),
        MariaDb::start(),
        MariaDb::start(),
    );
    let proxy = Proxy::start(config_for(&[&a, &b, &c]));
    let via = run_python("django_roundtrip.py", proxy.port, "dj");
    let alone = run_python("django_roundtrip.py", direct.port, "dj");
    assert!(via.contains("recorded after: 2"), "{via}");
    assert!(via.contains("auth: (True, True, ['staff'])"), "{via}");
    assert_eq!(via, alone);
    common::converge::assert_same_tables(
        &[&a, &b, &c],
        &[
            "dj.django_migrations",
            "dj.django_content_type",
            "dj.auth_permission",
            "dj.auth_user",
            "dj.auth_user_groups",
            "dj.auth_group_permissions",
            "dj.shop_customer",
            "dj.shop_order",
            "dj.shop_note",
        ],
    )
    .await;
}
