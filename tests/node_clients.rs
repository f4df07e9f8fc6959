//! Node.js's mysql2 driver, Sequelize and Knex through the proxy (three replicas) read
//! exactly what they read from one server direct, and what they wrote (schema sync and
//! alter, savepoints, upserts, row locks) is the same on every replica.

mod common;

use common::converge::assert_same_tables;
use common::{config_for, repo_path, MariaDb, Proxy};
use std::process::Command;

/// The packages `package-lock.json` pins, installed first if missing (what `.ci/run` does,
/// so that `cargo test` alone works where npm can reach its registry).
fn install_packages() {
    let dir = repo_path("tests/node");
    if dir.join("node_modules/mysql2").is_dir() {
        return;
    }
    let installed = Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "the Node packages are not installed and `npm ci --prefix tests/node` failed"
    );
}

fn run_script(port: u16, via_proxy: bool) -> String {
    let dir = repo_path("tests/node");
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("orm_roundtrip.js"))
        .arg(port.to_string())
        .arg("node_app");
    if via_proxy {
        cmd.arg("proxy");
    }
    let out = cmd
        .output()
        .expect("node must be installed (apt-get install nodejs npm)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "orm_roundtrip.js on port {port} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql2_sequelize_and_knex_match_direct() {
    common::init_tracing();
    install_packages();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let direct = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let via = tokio::task::spawn_blocking(move || {
        let via = run_script(proxy.port, true);
        (via, proxy)
    });
    let straight = tokio::task::spawn_blocking(move || run_script(direct.port, false))
        .await
        .unwrap();
    let (via, _proxy) = via.await.unwrap();
    // MariaDB's JSON is LONGTEXT; mysql2 parses it only from the extended column metadata
    // the proxy must negotiate and relay.
    assert!(via.contains(r#""doc":{"k":[1,null,"x"]}"#), "{via}");
    assert!(via.contains("sequelize describe"), "{via}");
    assert_eq!(via, straight);
    assert_same_tables(
        &[&dbs[0], &dbs[1], &dbs[2]],
        &[
            "node_app.t",
            "node_app.Users",
            "node_app.Posts",
            "node_app.accounts",
        ],
    )
    .await;
}
