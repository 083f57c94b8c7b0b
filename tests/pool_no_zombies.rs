//! After pools of every kind have ended — shut down, shut down now, dropped, with
//! workers that crashed, timed out, were cancelled or recycled — this process has no
//! child left, alive or zombie. The only test in its binary, since it looks at every
//! child of the process.

mod common;

use std::time::Duration;

use procpool::ProcessPoolExecutor;

fn crash(_: ()) -> u32 {
    std::process::abort()
}

fn children() -> Vec<(u32, Option<char>)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| common::ppid(pid) == Some(me))
        .map(|pid| (pid, common::state(pid)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_child_is_left_alive_or_unreaped() {
    let mut dropped_pids = Vec::new();

    // Shut down after crashes, a timeout, a cancel and recycling.
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .max_tasks_per_worker(3)
        .task_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(pool.run(crash, ()).await.is_err());
    }
    assert!(pool.run(common::spin_forever, ()).await.is_err());
    let h = pool.try_submit(common::spin_forever, ()).unwrap();
    h.started().await.unwrap();
    h.cancel();
    assert!(h.await.is_err());
    assert_eq!(
        pool.map(|x: u32| x, 0..20)
            .chunk_size(1)
            .await
            .unwrap()
            .len(),
        20
    );
    pool.shutdown().await;

    // shutdown_now with a busy worker.
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let h = pool.try_submit(common::spin_forever, ()).unwrap();
    h.started().await.unwrap();
    pool.shutdown_now().await;
    assert!(h.await.is_err());

    // Dropped with a busy and an idle worker.
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let h = pool.try_submit(common::spin_forever, ()).unwrap();
    dropped_pids.push(h.started().await.unwrap());
    dropped_pids.push(pool.run(common::whoami, ()).await.unwrap());
    drop(pool);
    assert!(h.await.is_err());
    for pid in dropped_pids {
        common::wait_gone(pid).await;
    }

    assert_eq!(children(), vec![], "children left behind (pid, state)");
}
