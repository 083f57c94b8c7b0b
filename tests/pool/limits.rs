//! Per-worker limits: CPU time per task, memory recycling, niceness and CPU affinity,
//! each set in the worker before it runs anything.

use std::time::Duration;

use procpool::{Affinity, Error, Limit, ProcessPoolExecutor, TaskError};

use crate::common;

/// Burns about `ms` milliseconds of CPU time.
fn burn_ms(ms: u64) -> u32 {
    let until = std::time::Instant::now() + Duration::from_millis(ms);
    let mut x = 0u64;
    while std::time::Instant::now() < until {
        x = x.wrapping_add(std::hint::black_box(1));
    }
    std::hint::black_box(x);
    std::process::id()
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

/// Allocates, touches and leaks `mib` MiB, then answers with this worker's pid.
fn leak_mib(mib: usize) -> u32 {
    let v = vec![1u8; mib << 20];
    std::mem::forget(std::hint::black_box(v));
    std::process::id()
}

/// A field of `/proc/self/status`, such as `Cpus_allowed_list`.
fn status_field(name: String) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// This process's niceness, field 19 of `/proc/self/stat`.
fn nice(_: ()) -> i32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = stat.rsplit_once(") ").unwrap().1;
    after_comm.split(' ').nth(16).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_cpu_time_fails_with_the_limit_named() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .cpu_time_limit(Duration::from_secs(1))
        .build()
        .unwrap();
    // Two tasks of 0.6 s each on one worker: 1.2 s in all, but each gets its own
    // second.
    let a = pool.run(burn_ms, 600).await.unwrap();
    let b = pool.run(burn_ms, 600).await.unwrap();
    assert_eq!(a, b, "one worker ran both");
    match pool.run(common::spin_forever, ()).await {
        Err(TaskError::LimitExceeded {
            limit: Limit::CpuTime(d),
        }) => assert_eq!(d, Duration::from_secs(1)),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    // The worker was replaced; the pool goes on.
    assert_ne!(pool.run(pid, ()).await.unwrap(), a);
    assert_eq!(pool.stats().worker_restarts, 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_its_memory_limit_is_recycled_after_delivering_its_result() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_memory_per_worker(96 << 20)
        .build()
        .unwrap();
    let first = pool.run(pid, ()).await.unwrap();
    assert_eq!(
        pool.run(pid, ()).await.unwrap(),
        first,
        "under the limit: kept"
    );
    // Over the limit after this task: its result still comes back.
    assert_eq!(pool.run(leak_mib, 128).await.unwrap(), first);
    let next = pool.run(pid, ()).await.unwrap();
    assert_ne!(next, first, "the worker over its limit was recycled");
    let s = pool.stats();
    assert_eq!(
        (s.workers_recycled, s.worker_restarts, s.failed),
        (1, 0, 0),
        "{s:?}"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_at_their_niceness_and_on_their_cpus() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .nice(7)
        .affinity(Affinity::Cpus(vec![0]))
        .build()
        .unwrap();
    assert_eq!(pool.run(nice, ()).await.unwrap(), 7);
    assert_eq!(
        pool.run(status_field, "Cpus_allowed_list".to_owned())
            .await
            .unwrap(),
        "0"
    );
    pool.shutdown().await;

    // One CPU each, taken in turn from this process's.
    let ours = status_field("Cpus_allowed_list".to_owned());
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .affinity(Affinity::OneCpuPerWorker)
        .build()
        .unwrap();
    let go = procpool::Event::new().unwrap();
    let held = common::start_held(&pool, wait_then_cpus, &go, 2).await;
    go.set();
    let mut cpus = Vec::new();
    for h in held {
        let list = h.await.unwrap();
        assert!(list.parse::<usize>().is_ok(), "one CPU each, got {list:?}");
        cpus.push(list);
    }
    if ours.contains(['-', ',']) {
        assert_ne!(cpus[0], cpus[1], "two CPUs to go round, yet {cpus:?}");
    }
    pool.shutdown().await;
}

fn wait_then_cpus(go: procpool::Event) -> String {
    go.blocking_wait().unwrap();
    status_field("Cpus_allowed_list".to_owned())
}

#[tokio::test(flavor = "current_thread")]
async fn limits_out_of_range_are_refused_by_build_with_the_option_named() {
    let refused = |b: procpool::PoolBuilder| match b.build() {
        Err(Error::InvalidConfig { what }) => what,
        Ok(_) => panic!("built"),
        Err(e) => panic!("{e:?}"),
    };
    let b = || ProcessPoolExecutor::builder().workers(1);
    assert!(refused(b().max_memory_per_worker(0)).contains("max_memory_per_worker"));
    assert!(refused(b().cpu_time_limit(Duration::ZERO)).contains("cpu_time_limit"));
    assert!(refused(b().nice(20)).contains("nice"));
    assert!(refused(b().nice(-21)).contains("nice"));
    assert!(refused(b().affinity(Affinity::Cpus(vec![]))).contains("affinity"));
    assert!(refused(b().affinity(Affinity::Cpus(vec![100_000]))).contains("affinity"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_limit_the_kernel_refuses_names_the_limit_and_the_errno() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .nice(-5)
        .build()
        .unwrap();
    // Raising priority needs CAP_SYS_NICE: root has it (then the worker runs at -5),
    // anyone else is refused with EACCES, before any task runs.
    let root = status_field("Uid".to_owned()).split_whitespace().nth(1) == Some("0");
    match (root, pool.ready().await) {
        (true, Ok(())) => assert_eq!(pool.run(nice, ()).await.unwrap(), -5),
        (false, Err(Error::LimitRefused { limit, errno })) => {
            assert_eq!((limit.as_str(), errno), ("nice", libc::EACCES));
            let e = pool.run(pid, ()).await.unwrap_err();
            assert!(matches!(
                e,
                TaskError::WorkerStart(Error::LimitRefused { .. })
            ));
            assert!(
                common::report(&e).contains("nice"),
                "{}",
                common::report(&e)
            );
        }
        (root, other) => panic!("root: {root}, ready: {other:?}"),
    }
    pool.shutdown().await;
}

/// Allocates and touches `mib` MiB, then answers with this worker's pid.
fn alloc_mib(mib: usize) -> u32 {
    let v = vec![1u8; mib << 20];
    std::hint::black_box(&v);
    std::process::id()
}

fn abort(_: ()) -> u32 {
    std::process::abort()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_address_space_fails_with_the_limit_named() {
    let limit = 1u64 << 30;
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .address_space_limit(limit)
        .build()
        .unwrap();
    let first = pool.run(alloc_mib, 16).await.unwrap();
    // 2 GiB in a worker allowed 1 GiB: the allocation fails and Rust aborts. (Its
    // "memory allocation of … bytes failed" on stderr is expected.)
    let e = pool.run(alloc_mib, 2048).await.unwrap_err();
    assert!(
        matches!(e, TaskError::LimitExceeded { limit: Limit::AddressSpace(l) } if l == limit),
        "{e}"
    );
    assert!(common::report(&e).contains("address-space limit"), "{e}");
    let second = pool.run(alloc_mib, 16).await.unwrap();
    assert_ne!(first, second, "the worker was replaced");
    // Any other abort is a death, not the limit.
    let e = pool.run(abort, ()).await.unwrap_err();
    assert!(
        matches!(
            e,
            TaskError::WorkerDied {
                exit: procpool::Exit::Signal(libc::SIGABRT)
            }
        ),
        "{e}"
    );
    assert_eq!(pool.stats().worker_restarts, 2);
    pool.shutdown().await;
}

/// Whether this worker maps a bulk area beside its ring, and `v` back.
fn maps_a_bulk_area(v: Vec<u8>) -> (bool, Vec<u8>) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    (maps.contains("procpool-bulk"), v)
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_with_an_address_space_limit_spills_large_frames_instead() {
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    for (limit, mapped) in [(None, true), (Some(1u64 << 30), false)] {
        let mut builder = ProcessPoolExecutor::builder().workers(1);
        if let Some(limit) = limit {
            builder = builder.address_space_limit(limit);
        }
        let pool = builder.build().unwrap();
        let (bulk, back) = pool.run(maps_a_bulk_area, big.clone()).await.unwrap();
        assert_eq!(bulk, mapped, "limit {limit:?}");
        assert!(back == big, "limit {limit:?}: the echo differs");
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_address_space_limit_below_a_fresh_worker_is_refused_by_name() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .address_space_limit(1 << 20)
        .build()
        .unwrap();
    match pool.ready().await {
        Err(Error::LimitRefused { limit, errno }) => {
            assert_eq!(
                (limit.as_str(), errno),
                ("address_space_limit", libc::ENOMEM)
            );
        }
        other => panic!("a worker maps more than 1 MiB: {other:?}"),
    }
    let zero = ProcessPoolExecutor::builder()
        .address_space_limit(0)
        .build();
    assert!(
        matches!(zero, Err(Error::InvalidConfig { what }) if what.contains("address_space_limit")),
        "zero is refused by the builder"
    );
}
