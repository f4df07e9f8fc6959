//! PyMySQL and SQLAlchemy through the proxy read exactly what they read direct, ids from a
//! sequence included.

mod common;

use common::{config_for, repo_path, MariaDb, Proxy};
use std::process::Command;

fn run_script(port: u16, db: &str) -> String {
    let out = Command::new("python3")
        .arg(repo_path("tests/python/orm_roundtrip.py"))
        .arg(port.to_string())
        .arg(db)
        .output()
        .expect("python3 must be installed, with PyMySQL and SQLAlchemy (pip install PyMySQL SQLAlchemy)");
    assert!(
        out.status.success(),
        "orm_roundtrip.py on port {port} failed:\n{}\n{}",
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
    assert_eq!(via, direct);
}
