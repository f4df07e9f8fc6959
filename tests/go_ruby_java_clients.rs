//! Go's database/sql with go-sql-driver/mysql (server-side prepares and interpolated
//! parameters), Ruby's ActiveRecord with the mysql2 gem and Java's JDBC with MariaDB
//! Connector/J (client- and server-side prepares) through the proxy (three replicas) see
//! exactly what they see from one server direct, and what they wrote is the same on every
//! replica. The drivers come from Debian (`.ci/run` installs them).

mod common;

use common::converge::{assert_same_tables, wait_converged};
use common::{config_for, repo_path, MariaDb, Proxy};
use std::process::Command;

fn output_of(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} cannot run ({e}): see .ci/run for the packages"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Builds tests/go/roundtrip.go against Debian's packaged driver (GOPATH mode: the
/// registry of Go modules is not reachable here).
fn build_go_probe(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = dir.join("roundtrip");
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(repo_path("tests/go/roundtrip.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("/usr/share/gocode:{}", dir.display()))
        .env("GOCACHE", dir.join("cache"));
    output_of(cmd, "go build tests/go/roundtrip.go");
    bin
}

fn go_transcript(bin: &std::path::Path, port: u16, interpolate: bool) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg(format!(
        "root@tcp(127.0.0.1:{port})/?parseTime=true&multiStatements=true&interpolateParams={interpolate}"
    ));
    output_of(cmd, "the Go probe")
}

fn ruby_transcript(port: u16) -> String {
    let mut cmd = Command::new("ruby");
    cmd.arg(repo_path("tests/ruby/activerecord_roundtrip.rb"))
        .arg(port.to_string());
    output_of(cmd, "activerecord_roundtrip.rb")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_sql_driver_matches_direct() {
    common::init_tracing();
    let build_dir = tempfile::tempdir().unwrap();
    let bin = build_go_probe(build_dir.path());
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let direct = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    for interpolate in [false, true] {
        let (b1, b2, port, direct_port) = (bin.clone(), bin.clone(), proxy.port, direct.port);
        let via = tokio::task::spawn_blocking(move || go_transcript(&b1, port, interpolate));
        let straight =
            tokio::task::spawn_blocking(move || go_transcript(&b2, direct_port, interpolate));
        let (via, straight) = (via.await.unwrap(), straight.await.unwrap());
        assert!(!via.contains("ERR "), "{via}");
        assert!(via.contains("last insert id 6"), "{via}");
        assert!(via.contains("timeout: context deadline exceeded"), "{via}");
        assert!(
            via.contains("read committed tx saw the other commit: 1"),
            "{via}"
        );
        assert_eq!(via, straight, "interpolateParams={interpolate}");
        let all = [&dbs[0], &dbs[1], &dbs[2]];
        wait_converged(&all).await;
        assert_same_tables(&all, &["go_app.t"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activerecord_matches_direct() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let direct = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let port = proxy.port;
    let via = tokio::task::spawn_blocking(move || ruby_transcript(port));
    let direct_port = direct.port;
    let straight = tokio::task::spawn_blocking(move || ruby_transcript(direct_port));
    let (via, straight) = (via.await.unwrap(), straight.await.unwrap());
    assert!(
        via.contains("savepoint: [\"ada2\", \"bobby\", \"outer\"]"),
        "{via}"
    );
    assert!(
        via.contains("stale: ActiveRecord::StaleObjectError"),
        "{via}"
    );
    assert_eq!(via, straight);
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    wait_converged(&all).await;
    assert_same_tables(&all, &["ruby_app.authors", "ruby_app.posts"]).await;
}

/// Debian's MariaDB Connector/J (libmariadb-java), the driver behind jdbc:mariadb URLs.
const CONNECTOR_J: &str = "/usr/share/java/mariadb-java-client.jar";

/// Compiles tests/java/JdbcRoundtrip.java into `dir`.
fn build_java_probe(dir: &std::path::Path) {
    let mut cmd = Command::new("javac");
    cmd.arg("-d")
        .arg(dir)
        .arg("-cp")
        .arg(CONNECTOR_J)
        .arg(repo_path("tests/java/JdbcRoundtrip.java"));
    output_of(cmd, "javac tests/java/JdbcRoundtrip.java");
}

fn java_transcript(dir: &std::path::Path, port: u16, server_prepares: bool) -> String {
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{CONNECTOR_J}:{}", dir.display()))
        .arg("JdbcRoundtrip")
        .arg(port.to_string())
        .arg(server_prepares.to_string());
    output_of(cmd, "JdbcRoundtrip")
}

/// Generated keys (single and batch), a duplicate key's SQLState and error code with the
/// connection still valid, a savepoint rolled back, a rolled-back transaction, a procedure's
/// OUT parameter, a 1 MiB blob, typed rows, a streamed read, the metadata ORMs ask for, and
/// ids from a sequence (values and column types as a direct server gives them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_connector_j_matches_direct() {
    common::init_tracing();
    let build_dir = tempfile::tempdir().unwrap();
    build_java_probe(build_dir.path());
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let direct = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    for server_prepares in [false, true] {
        let (d1, d2) = (build_dir.path().to_owned(), build_dir.path().to_owned());
        let (port, direct_port) = (proxy.port, direct.port);
        let via = tokio::task::spawn_blocking(move || java_transcript(&d1, port, server_prepares));
        let straight =
            tokio::task::spawn_blocking(move || java_transcript(&d2, direct_port, server_prepares));
        let (via, straight) = (via.await.unwrap(), straight.await.unwrap());
        for line in [
            "batch keys 2 3 4 5 6",
            "duplicate: SQLIntegrityConstraintViolationException state 23000 code 1062",
            "valid after error: true",
            "  row n=0:Long",
            "procedure out 36.00",
            "same true",
            "  row nextval(t_seq)=1:Long",
            "  row next value for t_seq=51:Long",
            "  row id=101:Long name=from_sequence:String",
            "  row next_id=151:Long",
            "done",
        ] {
            assert!(via.contains(line), "missing {line:?}:\n{via}");
        }
        assert_eq!(via, straight, "useServerPrepStmts={server_prepares}");
        let all = [&dbs[0], &dbs[1], &dbs[2]];
        wait_converged(&all).await;
        assert_same_tables(&all, &["java_app.t"]).await;
    }
}
