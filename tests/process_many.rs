//! A hundred children started and joined concurrently, and no zombie left. The only
//! test in its binary, since it looks at every child of the process.

mod common;

use procpool::Process;

fn triple(x: u32) -> (u32, u32) {
    (x * 3, std::process::id())
}

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            format!(
                "{:?} -> {:?}",
                e.file_name(),
                std::fs::read_link(e.path()).ok()
            )
        })
        .collect();
    fds.sort();
    fds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_children_at_once_leave_no_zombie_and_no_fd() {
    // Warm up: the first child starts procpool's supervisor thread and its runtime.
    Process::spawn(triple, 0).unwrap().join().await.unwrap();
    let fds_before = open_fds();

    let mut children: Vec<Process<(u32, u32)>> = (0..100)
        .map(|i| Process::spawn(triple, i).unwrap())
        .collect();
    let pids: Vec<u32> = children.iter().map(Process::pid).collect();
    let results = futures::future::join_all(children.iter_mut().map(|c| c.join())).await;
    for (i, r) in results.into_iter().enumerate() {
        let (value, pid) = r.unwrap();
        assert_eq!(value, i as u32 * 3);
        assert_eq!(pid, pids[i]);
    }
    // join returns once the child has been reaped.
    for pid in &pids {
        assert!(!common::exists(*pid), "child {pid} left in /proc");
    }
    assert_eq!(common::zombie_children(), Vec::<u32>::new());
    // Checked before `active_children`, which would prune its list as a side effect.
    drop(children);
    assert_eq!(open_fds(), fds_before, "pidfds or sockets leaked");
    assert!(procpool::active_children().is_empty());
}
