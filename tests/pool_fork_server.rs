//! The fork server killed from outside: its workers die with it, and every pool that
//! uses it heals through a new one. The server is shared by the whole process, so the
//! tests of this file take [`SERVER`] and run one at a time, alone in this binary.

mod common;

use procpool::{Event, ProcessPoolExecutor, StartMethod, TaskError};

static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn forked_pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .start_method(StartMethod::ForkServer)
        .build()
        .unwrap()
}

/// (its pid, its parent's pid: the fork server)
fn pid_and_server(_: ()) -> (u32, u32) {
    (std::process::id(), std::os::unix::process::parent_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fork_server_takes_its_workers_and_the_pool_heals() {
    let _server = SERVER.lock().await;
    let pool = forked_pool(2);
    let (worker, server) = pool.run(pid_and_server, ()).await.unwrap();
    // A spare waits for the next request, and dies with its server too.
    let spare = common::spare_of(server);
    assert_ne!(spare, worker);
    let running = Event::new().unwrap();
    let held = pool
        .try_submit(common::signal_then_spin_forever, running.clone())
        .unwrap();
    running.wait().await.unwrap();

    common::signal(server, libc::SIGKILL);
    match held.await {
        Err(TaskError::WorkerDied { .. }) => {}
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    common::wait_gone_or_zombie(worker).await;
    common::wait_gone_or_zombie(spare).await;

    // New workers come from a new server; the old one is reaped.
    let results: Vec<u64> = pool.map(|x: u64| x + 1, 0..1000u64).await.unwrap();
    assert_eq!(results, (1..=1000u64).collect::<Vec<_>>());
    let (_, new_server) = pool.run(pid_and_server, ()).await.unwrap();
    assert_ne!(new_server, server);
    common::wait_gone(server).await;
    pool.shutdown().await;
    assert_eq!(
        common::workers_of(new_server),
        Vec::<u32>::new(),
        "no worker left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_under_a_storm_of_killed_workers_and_servers_all_resolve() {
    const N: u64 = 100_000;
    const WINDOW: usize = 1024;
    let _server = SERVER.lock().await;
    let pool = forked_pool(2);
    let common::Storm { died, strikes } = common::storm(
        N,
        WINDOW,
        common::Dice(0x2545_f491_4f6c_dd1d),
        (2_000, 15_000),
        |i| pool.try_submit(|x: u64| x, i).unwrap(),
        |strike| {
            // Every other strike kills the server (and so its workers), the others
            // kill its children: the workers and the spare.
            for server in common::live_children() {
                if strike % 2 == 0 {
                    common::kill_children();
                } else {
                    for worker in common::children_of(server) {
                        if let Ok(fd) = common::pidfd(worker) {
                            let _ = rustix::process::pidfd_send_signal(
                                &fd,
                                rustix::process::Signal::KILL,
                            );
                        }
                    }
                }
            }
        },
    )
    .await;
    let stats = pool.stats();
    eprintln!(
        "{N} tasks: {died} failed, {strikes} strikes, {} workers replaced",
        stats.worker_restarts
    );
    assert!(strikes >= 2);
    assert!(stats.worker_restarts >= strikes, "{stats:?}");
    assert_eq!(stats.submitted, N, "{stats:?}");
    assert_eq!(stats.cancelled, 0, "{stats:?}");
    assert_eq!(stats.worker_died, died, "{stats:?}");
    common::assert_adds_up(stats);
    assert_eq!(pool.run(|x: u64| x + 1, 1).await.unwrap(), 2);
    pool.shutdown().await;
    for server in common::live_children() {
        assert_eq!(
            common::workers_of(server),
            Vec::<u32>::new(),
            "no worker left"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_spares_are_reaped_and_replaced_and_pools_still_start() {
    let _server = SERVER.lock().await;
    let pool = forked_pool(1);
    let (_, server) = pool.run(pid_and_server, ()).await.unwrap();
    pool.shutdown().await;
    // Kill both spares the server holds (it forks them together, once requests
    // pause, and forks none after a spare dies until the next request).
    let mut killed = Vec::new();
    for _ in 0..2 {
        let spare = common::spare_of(server);
        common::signal(spare, libc::SIGKILL);
        common::wait_gone_or_zombie(spare).await;
        killed.push(spare);
    }
    // Workers are forked without them, and the server is the same one.
    let pool = forked_pool(2);
    let squares: Vec<u64> = pool.map(|x: u64| x * x, 0..1000u64).await.unwrap();
    assert_eq!(squares, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    let (worker, again) = pool.run(pid_and_server, ()).await.unwrap();
    assert_eq!(again, server);
    assert!(!killed.contains(&worker));
    // The killed spares were reaped by the server, not left as zombies.
    for &spare in &killed {
        common::wait_gone(spare).await;
    }
    // And after the pause that follows those requests, there are spares again.
    let spare = common::spare_of(server);
    assert!(!killed.contains(&spare));
    pool.shutdown().await;
}
