//! Handles passed between processes leave no descriptor behind in the parent, and a
//! handle dropped in one process does not disturb the others. Alone in its binary:
//! it counts this process's open descriptors.

use procpool::{Connection, Process, ProcessPoolExecutor, Queue};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Uses both handles, then gives the pipe end back as part of its result.
fn use_and_return((q, conn): (Queue<u32>, Connection<u32>)) -> (u32, Connection<u32>) {
    let n = q.blocking_get().unwrap();
    conn.blocking_send(&(n + 1)).unwrap();
    (n, conn)
}

fn use_and_drop((q, conn): (Queue<u32>, Connection<u32>)) -> u32 {
    let n = q.blocking_get().unwrap();
    conn.blocking_send(&(n + 1)).unwrap();
    n
    // Both handles are dropped here, in the child.
}

#[tokio::test]
async fn handles_through_tasks_and_children_leak_no_descriptor() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    pool.ready().await.unwrap();
    // Warm up what lives for the whole process (supervisor, runtime, pool sockets).
    {
        let q = Queue::<u32>::unbounded().unwrap();
        let (a, b) = procpool::pipe::<u32>().unwrap();
        q.put(0).await.unwrap();
        pool.run(use_and_drop, (q, b)).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), 1);
    }
    let before = open_fds();
    for round in 0..20u32 {
        let q = Queue::unbounded().unwrap();
        let (a, b) = procpool::pipe::<u32>().unwrap();
        q.put(round).await.unwrap();
        q.put(round + 100).await.unwrap();
        // The same handles go to a pool task (which hands the pipe end back in its
        // result) and then to a child process; each drops its copies, and ours keep
        // working.
        let (n, b) = pool.run(use_and_return, (q.clone(), b)).await.unwrap();
        assert_eq!(n, round);
        assert_eq!(a.recv().await.unwrap(), round + 1);
        let mut child = Process::spawn(use_and_drop, (q.clone(), b)).unwrap();
        assert_eq!(child.join().await.unwrap(), round + 100);
        assert_eq!(a.recv().await.unwrap(), round + 101);
        q.put(7).await.unwrap();
        assert_eq!(q.get().await.unwrap(), 7);
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
    pool.shutdown().await;
}
