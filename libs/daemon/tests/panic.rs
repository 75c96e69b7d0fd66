//! A panic in any task of a daemon ends the process (SIGABRT), so systemd
//! restarts it: tokio alone would catch the panic and keep the rest of the
//! daemon, its gRPC service and watchdog, running without the dead task.
#![allow(clippy::unwrap_used, missing_docs)]

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

const CHILD: &str = "BITDUST_PANIC_TEST_CHILD";

/// Run in a child process: a tokio runtime whose spawned task panics while
/// the main task would go on for 30 s.
fn child() {
    bitdust_daemon::abort_on_panic();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            panic!("a supervised task failed");
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    // Reached only if the panic did not end the process.
    std::process::exit(0);
}

#[test]
fn a_panicking_task_brings_the_whole_daemon_down() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panicking_task_brings_the_whole_daemon_down",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "the child should die of SIGABRT, got {:?}; stderr: {stderr}",
        out.status
    );
    assert!(stderr.contains("a supervised task failed"), "{stderr}");
}

/// SIGABRT on Linux.
const SIGABRT: i32 = 6;
