//! A lone busy client's session polls for its next command instead of sleeping
//! (`proxy.busy_poll_us`), and does not when that is set to 0. Its own test binary: whether a
//! session may poll depends on no other session in the process having started a command
//! lately, so other tests' sessions in the same process would switch polling off.

mod common;

use common::{config_for, mysql_cli, MariaDb, Proxy};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

async fn poll_counters(port: u16) -> (u64, u64) {
    let url = format!("mysql://root@127.0.0.1:{port}/?prefer_socket=false");
    let mut c = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let rows: Vec<(String, u64)> = c
        .query("SHOW PROXY STATUS LIKE 'client_poll%'")
        .await
        .unwrap();
    let get = |name: &str| {
        rows.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name} in SHOW PROXY STATUS: {rows:?}"))
    };
    (get("client_polls"), get("client_poll_hits"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_busy_clients_next_commands_are_polled_for_unless_turned_off() {
    common::init_tracing();
    let db = MariaDb::start();
    // The mysql CLI sends each statement as soon as it has printed the last answer.
    let script: String = (0..400).map(|i| format!("SELECT {i} AS n;\n")).collect();
    for budget_us in [40, 0] {
        let mut cfg = config_for(&[&db]);
        cfg.proxy.busy_poll_us = budget_us;
        let proxy = Proxy::start(cfg);
        let (ok, out, err) = mysql_cli(proxy.port, &["-N"], &script);
        assert!(ok, "{err}");
        // Every answer arrived, in order.
        let answers: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(answers, (0..400).collect::<Vec<u32>>());
        let (polls, hits) = poll_counters(proxy.port).await;
        if budget_us == 0 {
            assert_eq!((polls, hits), (0, 0), "polling is off");
        } else {
            // Not every wait: the first commands of the session, before it had the proxy to
            // itself for a while, sleep; a missed poll or two under load is fine.
            assert!(polls >= 200, "{polls} of 400 waits polled");
            assert!(
                hits >= polls / 4,
                "{hits} of {polls} polls found the command"
            );
        }
    }
}
