//! The executor on NATS JetStream hosts, against a real `nats-server` started by each
//! test (see `server.rs`). Hosts are this test binary again, as `Process` children
//! serving the pool; the submitter is the test itself.

#[path = "../common/mod.rs"]
mod common;
mod server;

use std::time::Duration;

use futures::StreamExt;
use procpool::remote::NatsOptions;
use procpool::{Process, ProcessPoolExecutor, RemoteTaskError, TaskError};
use server::NatsServer;

fn square(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}
procpool::remote_task!("test.square" => square);

fn shout(s: String) -> String {
    s.to_uppercase()
}
procpool::remote_task!("test.shout" => shout);

fn not_registered(x: u64) -> u64 {
    x + 1
}

/// A host: serves the pool with a local pool of `workers`, until it is killed.
async fn host((url, pool, workers): (String, String, usize)) -> String {
    let options = NatsOptions::new(url)
        .pool(pool)
        .ack_wait(Duration::from_secs(5));
    match procpool::remote::serve(options, workers).await {
        Ok(()) => "served".to_owned(),
        Err(e) => common::report(&e),
    }
}

/// Hosts killed (and reaped) when the test ends, however it ends.
struct Hosts(Vec<Process<String>>);

impl Hosts {
    fn start(url: &str, pool: &str, n: usize) -> Hosts {
        Hosts(
            (0..n)
                .map(|_| Process::spawn_async(host, (url.to_owned(), pool.to_owned(), 2)).unwrap())
                .collect(),
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for h in &self.0 {
            let _ = h.kill();
        }
    }
}

fn executor(url: &str, pool: &str) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .nats(NatsOptions::new(url).pool(pool))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_round_trip_through_two_hosts() {
    let server = NatsServer::start();
    let hosts = Hosts::start(&server.url, "roundtrip", 2);
    let pool = executor(&server.url, "roundtrip");
    pool.ready().await.unwrap();

    let handles: Vec<_> = (0..1_000u64).map(|i| pool.submit(square, i)).collect();
    let mut pids = std::collections::BTreeSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (sq, pid) = tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .expect("a reply within a minute")
            .unwrap();
        assert_eq!(sq, (i * i) as u64);
        pids.insert(pid);
    }
    // Each host runs two local workers; the work spread over more than one process.
    assert!(pids.len() >= 2, "every task ran in {pids:?}");
    assert!(
        !pids.contains(&std::process::id()),
        "a task ran in the submitter"
    );

    assert_eq!(pool.run(shout, "hi".to_owned()).await.unwrap(), "HI");

    // `map` goes in chunks, each a message, and comes back in order.
    let squares: Vec<(u64, u32)> = pool.map(square, 0..500u64).chunk_size(50).await.unwrap();
    assert!(squares
        .iter()
        .enumerate()
        .all(|(i, &(s, _))| s == (i * i) as u64));
    let mut unordered: Vec<u64> = pool
        .map_unordered(square, 0..100u64)
        .map(|r| r.unwrap().0)
        .collect()
        .await;
    unordered.sort_unstable();
    assert_eq!(unordered, (0..100u64).map(|i| i * i).collect::<Vec<_>>());

    // Counters count jobs (a `map` chunk is one): 1,000 + 1 + 10 chunks, and the
    // unordered map's chunks on top.
    let stats = pool.stats();
    assert!(stats.completed > 1_011, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    pool.shutdown().await;
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_function_fails_before_anything_is_sent() {
    let server = NatsServer::start();
    let pool = executor(&server.url, "unregistered");
    pool.ready().await.unwrap();
    match pool.run(not_registered, 1).await {
        Err(TaskError::Remote(RemoteTaskError::NotRegistered { type_name })) => {
            assert!(type_name.ends_with("not_registered"), "{type_name}");
        }
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    // A handle cannot leave the machine: refused, nothing sent.
    fn takes_a_queue(q: procpool::Queue<u32>) -> u32 {
        q.blocking_get().unwrap()
    }
    procpool::remote_task!("test.takes_a_queue" => takes_a_queue);
    let q = procpool::Queue::<u32>::unbounded().unwrap();
    match pool.run(takes_a_queue, q).await {
        Err(TaskError::Remote(RemoteTaskError::HandlesCannotTravel)) => {}
        other => panic!("expected HandlesCannotTravel, got {other:?}"),
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_a_typed_error_from_ready() {
    // A port nothing listens on: bind one, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = executor(&format!("nats://127.0.0.1:{port}"), "nowhere");
    match tokio::time::timeout(Duration::from_secs(30), pool.ready()).await {
        Ok(Err(procpool::Error::Remote { what, .. })) => assert_eq!(what, "connect"),
        other => panic!("expected Error::Remote, got {other:?}"),
    }
    // Tasks fail with the same reason rather than wait.
    assert!(matches!(
        pool.run(square, 2).await,
        Err(TaskError::WorkerStart(procpool::Error::Remote { .. }))
    ));
}

#[test]
fn a_bad_pool_name_is_refused_by_build() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let built = ProcessPoolExecutor::builder()
        .nats(NatsOptions::new("nats://127.0.0.1:4222").pool("has.dots"))
        .build();
    assert!(matches!(built, Err(procpool::Error::InvalidConfig { .. })));
}
