//! PHP's mysqlnd drivers (PDO with emulated and with native prepares, mysqli with prepared
//! statements, multi_query, change_user) through the proxy read exactly what they read direct.

mod common;

use common::{config_for, repo_path, MariaDb, Proxy};
use std::process::Command;

fn run_script(port: u16) -> String {
    let out = Command::new("php")
        .arg(repo_path("tests/php/pdo_mysqli.php"))
        .arg(port.to_string())
        .output()
        .expect(
            "php must be installed, with its MySQL drivers (apt-get install php-cli php-mysql)",
        );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !stdout.contains("Fatal error"),
        "pdo_mysqli.php on port {port} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn pdo_and_mysqli_match_direct() {
    common::init_tracing();
    let db = MariaDb::start();
    let direct = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let via = run_script(proxy.port);
    let straight = run_script(direct.port);
    // mysqli::multi_query switches multi-statements on with COM_SET_OPTION for its query.
    assert!(via.contains("[[\"1\"]]\n[[\"2\"]]"), "{via}");
    // Emulated and native prepares: the warnings of the write before, kept by the proxy.
    assert_eq!(
        via.matches("warnings: [[\"Warning\",1366").count(),
        2,
        "{via}"
    );
    assert_eq!(via, straight);
}
