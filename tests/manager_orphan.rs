//! A manager whose owner is killed with SIGKILL leaves nothing behind: its server
//! process dies, and no file is left in the temp dir (its socket has an abstract
//! name).
//!
//! Alone in its binary: it makes this process the subreaper of orphans, to reap the
//! manager's server after its parent is killed.

mod common;

use std::time::Duration;

use procpool::manager::Manager;
use procpool::{Connection, Exit, Process};

/// Starts a manager, reports (own pid, the server's pid), then waits for ever.
fn own_a_manager(report: Connection<(u32, u32)>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = Manager::start().await.unwrap();
        let v = m.value(&1u8).await.unwrap();
        assert_eq!(v.get().await.unwrap(), 1);
        let server = procpool::active_children()
            .into_iter()
            .find(|c| c.name == "Manager")
            .expect("the manager's server is our child");
        report
            .send(&(std::process::id(), server.pid))
            .await
            .unwrap();
        std::future::pending::<()>().await;
    });
}

fn procpool_temp_files() -> Vec<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("procpool"))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_manager_whose_owner_is_killed_leaves_no_process_and_no_file() {
    common::become_subreaper();
    let before = procpool_temp_files();
    let (report, theirs) = procpool::pipe::<(u32, u32)>().unwrap();
    let mut owner = Process::builder()
        .daemon(false)
        .spawn(own_a_manager, theirs)
        .unwrap();
    let (owner_pid, server_pid) = report.recv().await.unwrap();
    assert_eq!(owner_pid, owner.pid());
    assert_eq!(
        procpool_temp_files(),
        before,
        "a running manager has no file in the temp dir"
    );
    owner.kill().unwrap();
    assert!(owner.join().await.is_err(), "killed");
    // The server, orphaned and reparented to us, dies with its owner (its socket to
    // the owner closes and the parent-death signal fires); reap it here. The timeout
    // only guards against a hang.
    let exit = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || common::reap(server_pid)),
    )
    .await
    .expect("the manager's server outlived its owner")
    .unwrap();
    assert!(matches!(exit, Exit::Signal(_) | Exit::Code(_)));
    assert!(!common::exists(server_pid));
    assert_eq!(
        procpool_temp_files(),
        before,
        "nothing left in the temp dir"
    );
}
