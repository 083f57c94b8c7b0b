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

fn crash_always(_: ()) -> u32 {
    std::process::abort()
}
procpool::remote_task!("test.crash_always" => crash_always);

/// On its first delivery: tells the test, through the FIFO at `fifo`, which host
/// runs it (its worker's parent), then hangs until that host is killed. On the next
/// delivery: returns 2.
fn hang_on_first(fifo: String) -> u32 {
    use std::io::Write;
    let marker = format!("{fifo}.ran");
    if std::path::Path::new(&marker).exists() {
        return 2;
    }
    std::fs::write(&marker, b"").unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writeln!(f, "{}", std::os::unix::process::parent_id()).unwrap();
    drop(f);
    loop {
        std::thread::park();
    }
}
procpool::remote_task!("test.hang_on_first" => hang_on_first);

/// Tells the test, through the FIFO at `fifo`, the pid of the worker running it, then
/// hangs until that worker is killed.
fn report_then_hang(fifo: String) -> u32 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writeln!(f, "{}", std::process::id()).unwrap();
    drop(f);
    loop {
        std::thread::park();
    }
}
procpool::remote_task!("test.report_then_hang" => report_then_hang);

/// Counts its runs in `<dir>/runs`, then waits until the test writes a line to the
/// FIFO `<dir>/fifo`; returns the runs counted. The test releases it only after the
/// host has kept it alive past the ack wait.
fn outlast_the_ack_wait(dir: String) -> u32 {
    use std::io::{Read, Write};
    let counter = format!("{dir}/runs");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&counter)
        .unwrap();
    f.write_all(b"run\n").unwrap();
    let mut line = [0u8; 1];
    std::fs::File::open(format!("{dir}/fifo"))
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    std::fs::read_to_string(&counter).unwrap().lines().count() as u32
}
procpool::remote_task!("test.outlast_the_ack_wait" => outlast_the_ack_wait);

/// A FIFO in a fresh directory: (the directory, the FIFO's path).
fn fifo(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("procpool-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    (dir, path.to_string_lossy().into_owned())
}

/// Reads one line from the FIFO (waiting for its writer) as a pid.
async fn read_pid(fifo: &str) -> u32 {
    let path = fifo.to_owned();
    let line = tokio::task::spawn_blocking(move || std::fs::read_to_string(path).unwrap())
        .await
        .unwrap();
    line.trim().parse().unwrap()
}

/// A host's settings: the pool's name, its workers, and the stream's delivery limits.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct HostSpec {
    url: String,
    pool: String,
    workers: usize,
    ack_wait_ms: u64,
    max_deliver: u32,
    /// A CA to trust over TLS (the server then requires TLS).
    tls_ca: Option<String>,
}

/// A host: serves the pool with a local pool, until it is killed.
async fn host(spec: HostSpec) -> String {
    let options = NatsOptions::new(spec.url)
        .pool(spec.pool)
        .ack_wait(Duration::from_millis(spec.ack_wait_ms))
        .max_deliver(spec.max_deliver);
    let options = match spec.tls_ca {
        Some(ca) => options.require_tls(true).tls_root_certificate(ca),
        None => options,
    };
    match procpool::remote::serve(options, spec.workers).await {
        Ok(()) => "served".to_owned(),
        Err(e) => common::report(&e),
    }
}

/// Hosts killed (and reaped) when the test ends, however it ends.
struct Hosts(Vec<Process<String>>);

impl HostSpec {
    /// Two workers, a 5 s ack wait, three deliveries.
    fn new(url: &str, pool: &str) -> HostSpec {
        HostSpec {
            url: url.to_owned(),
            pool: pool.to_owned(),
            workers: 2,
            ack_wait_ms: 5_000,
            max_deliver: 3,
            tls_ca: None,
        }
    }
}

impl Hosts {
    fn start(url: &str, pool: &str, n: usize) -> Hosts {
        Hosts::start_spec(HostSpec::new(url, pool), n)
    }

    fn start_spec(spec: HostSpec, n: usize) -> Hosts {
        Hosts(
            (0..n)
                .map(|_| Process::spawn_async(host, spec.clone()).unwrap())
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

    let handles: Vec<_> = (0..1_000u64)
        .map(|i| pool.try_submit(square, i).unwrap())
        .collect();
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
    // The same through `map`: each item says so, naming the function.
    let results: Vec<_> = pool.map_unordered(not_registered, 0..3u64).collect().await;
    assert_eq!(results.len(), 3);
    for r in results {
        match r {
            Err(TaskError::Remote(RemoteTaskError::NotRegistered { type_name })) => {
                assert!(type_name.ends_with("not_registered"), "{type_name}");
            }
            other => panic!("expected NotRegistered, got {other:?}"),
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_always_kills_its_worker_exhausts_its_deliveries() {
    let server = NatsServer::start();
    let spec = HostSpec {
        workers: 1,
        max_deliver: 2,
        ..HostSpec::new(&server.url, "crashes")
    };
    let hosts = Hosts::start_spec(spec, 1);
    let pool = executor(&server.url, "crashes");
    pool.ready().await.unwrap();
    let crashed = tokio::time::timeout(Duration::from_secs(60), pool.run(crash_always, ()))
        .await
        .expect("an answer within a minute");
    match crashed {
        Err(TaskError::Remote(RemoteTaskError::RetriesExhausted { attempts, last })) => {
            assert_eq!(attempts, 2);
            assert!(last.contains("SIGABRT"), "{last}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    // The pool and the host go on.
    assert_eq!(pool.run(square, 3).await.unwrap().0, 9);
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_under_a_task_hands_it_to_another() {
    let server = NatsServer::start();
    let spec = HostSpec {
        workers: 1,
        ack_wait_ms: 1_000,
        ..HostSpec::new(&server.url, "handover")
    };
    let hosts = Hosts::start_spec(spec, 2);
    let pool = executor(&server.url, "handover");
    pool.ready().await.unwrap();
    let (dir, path) = fifo("handover");
    let task = pool.try_submit(hang_on_first, path.clone()).unwrap();
    // The first delivery says which host runs it (opening the FIFO waits for it).
    let running_on = read_pid(&path).await;
    let victim = hosts
        .0
        .iter()
        .find(|h| h.pid() == running_on)
        .expect("the task runs on one of our hosts");
    victim.kill().unwrap();
    // After the ack wait the other host gets it again, and finishes it.
    let second = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("an answer within a minute")
        .unwrap();
    assert_eq!(second, 2, "the task ran a second time");
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_the_server_limit_fails_before_anything_is_sent() {
    let server = NatsServer::start();
    let pool = executor(&server.url, "big");
    pool.ready().await.unwrap();
    // The server's default limit is 1 MiB.
    match pool.run(shout, "x".repeat(2 << 20)).await {
        Err(TaskError::Remote(RemoteTaskError::PayloadTooLarge { len, limit })) => {
            assert!(len > limit, "{len} <= {limit}");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error_at_connect() {
    let server = NatsServer::start_with(&["--user", "worker", "--pass", "right"]);
    let wrong = ProcessPoolExecutor::builder()
        .nats(
            NatsOptions::new(&server.url)
                .pool("secured")
                .user_and_password("worker", "wrong"),
        )
        .build()
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), wrong.ready()).await {
        Ok(Err(procpool::Error::Remote { what, reason })) => {
            assert_eq!(what, "connect");
            assert!(reason.to_lowercase().contains("author"), "{reason}");
        }
        other => panic!("expected Error::Remote, got {other:?}"),
    }
    let right = ProcessPoolExecutor::builder()
        .nats(
            NatsOptions::new(&server.url)
                .pool("secured")
                .user_and_password("worker", "right"),
        )
        .build()
        .unwrap();
    right.ready().await.unwrap();
    right.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_remote_task_kills_its_worker() {
    let server = NatsServer::start();
    let hosts = Hosts::start(&server.url, "cancel", 1);
    let pool = executor(&server.url, "cancel");
    pool.ready().await.unwrap();
    let (dir, path) = fifo("cancel");
    let task = pool.try_submit(report_then_hang, path.clone()).unwrap();
    let worker = read_pid(&path).await;
    task.cancel();
    let answer = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("an answer within a minute");
    assert!(matches!(answer, Err(TaskError::Cancelled)), "{answer:?}");
    // The host killed the worker that ran it.
    common::wait_gone_or_zombie(worker).await;
    // And goes on.
    assert_eq!(pool.run(square, 4).await.unwrap().0, 16);
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_task_past_its_timeout_is_killed_and_times_out() {
    let server = NatsServer::start();
    let hosts = Hosts::start(&server.url, "timeout", 1);
    let pool = ProcessPoolExecutor::builder()
        .nats(NatsOptions::new(&server.url).pool("timeout"))
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    pool.ready().await.unwrap();
    let (dir, path) = fifo("timeout");
    let task = pool.try_submit(report_then_hang, path.clone()).unwrap();
    let worker = read_pid(&path).await;
    let answer = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("an answer within a minute");
    match answer {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    common::wait_gone_or_zombie(worker).await;
    assert_eq!(pool.run(square, 5).await.unwrap().0, 25);
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_is_terminated_and_answered_and_another_build_is_not_taken() {
    let server = NatsServer::start();
    let hosts = Hosts::start(&server.url, "strangers", 1);
    let pool = executor(&server.url, "strangers");
    pool.ready().await.unwrap();
    let fingerprint = procpool::remote::build_fingerprint();

    // A message naming a task this build never registered, published by hand.
    let client = async_nats::connect(&server.url).await.unwrap();
    let mut answers = client.subscribe("test.answers").await.unwrap();
    client.flush().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Procpool-Task", "test.nobody_registered_this");
    headers.insert("Procpool-Id", "7");
    headers.insert("Procpool-Reply", "test.answers");
    let subject = format!("procpool.strangers.tasks.{fingerprint:016x}");
    js.publish_with_headers(subject, headers, Vec::new().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), answers.next())
        .await
        .expect("an answer within a minute")
        .unwrap();
    let text = String::from_utf8_lossy(&answer.payload);
    assert!(text.contains("test.nobody_registered_this"), "{text}");

    // A submitter of another build: its task goes to another subject, which no host
    // of this build takes.
    let stranger = ProcessPoolExecutor::builder()
        .nats(NatsOptions::new(&server.url).pool("strangers"))
        .expect_fingerprint_for_testing(fingerprint ^ 1)
        .build()
        .unwrap();
    stranger.ready().await.unwrap();
    let untaken = stranger.try_submit(square, 6).unwrap();
    // Meanwhile this build's tasks run, on the host that refused nothing else.
    assert_eq!(pool.run(square, 7).await.unwrap().0, 49);
    let stream = js.get_stream("PROCPOOL_strangers").await.unwrap();
    let other = format!("procpool.strangers.tasks.{:016x}", fingerprint ^ 1);
    let info = stream.info_with_subjects(&other).await.unwrap();
    let waiting: Vec<_> = futures::StreamExt::collect::<Vec<_>>(info).await;
    let counts: Vec<(String, usize)> = waiting.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        counts,
        vec![(other, 1)],
        "the other build's task waits, untaken"
    );
    drop(untaken);
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_tasks_survive_a_server_restart_and_everyone_reconnects() {
    let mut server = NatsServer::start();
    let pool = executor(&server.url, "restart");
    pool.ready().await.unwrap();
    // Twenty tasks wait in the stream: no host runs yet.
    let tasks: Vec<_> = (0..20u64)
        .map(|i| pool.try_submit(square, i).unwrap())
        .collect();
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stored = async {
        loop {
            let mut stream = js.get_stream("PROCPOOL_restart").await.unwrap();
            if stream.info().await.unwrap().state.messages == 20 {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), stored)
        .await
        .expect("the twenty tasks stored within a minute");

    server.restart();

    // A host starts after the restart; the submitter reconnects by itself, and gets
    // every answer.
    let hosts = Hosts::start(&server.url, "restart", 1);
    for (i, task) in tasks.into_iter().enumerate() {
        let (sq, _) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("an answer within a minute")
            .unwrap();
        assert_eq!(sq, (i * i) as u64);
    }
    // And new work flows both ways.
    assert_eq!(pool.run(square, 9).await.unwrap().0, 81);
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_lost_on_the_last_delivery_is_retries_exhausted_not_a_hang() {
    let server = NatsServer::start();
    let spec = HostSpec {
        workers: 1,
        ack_wait_ms: 1_000,
        max_deliver: 1,
        ..HostSpec::new(&server.url, "lastlost")
    };
    let hosts = Hosts::start_spec(spec, 1);
    let pool = ProcessPoolExecutor::builder()
        .nats(
            NatsOptions::new(&server.url)
                .pool("lastlost")
                .max_deliver(1),
        )
        .build()
        .unwrap();
    pool.ready().await.unwrap();
    let (dir, path) = fifo("lastlost");
    let task = pool.try_submit(hang_on_first, path.clone()).unwrap();
    let running_on = read_pid(&path).await;
    assert_eq!(hosts.0[0].pid(), running_on);
    hosts.0[0].kill().unwrap();
    // No delivery is left: the server's advisory ends the task.
    match tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("an answer within a minute")
    {
        Err(TaskError::Remote(RemoteTaskError::RetriesExhausted { attempts, .. })) => {
            assert_eq!(attempts, 1)
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_acks_keep_a_long_task_on_its_host() {
    let server = NatsServer::start();
    let spec = HostSpec {
        ack_wait_ms: 1_000,
        ..HostSpec::new(&server.url, "long")
    };
    let hosts = Hosts::start_spec(spec, 2);
    let pool = executor(&server.url, "long");
    pool.ready().await.unwrap();
    // The hosts' acks go to `$JS.ACK.<stream>.<consumer>...`; progress is `+WPI`.
    let client = async_nats::connect(&server.url).await.unwrap();
    let mut acks = client.subscribe("$JS.ACK.PROCPOOL_long.>").await.unwrap();
    client.flush().await.unwrap();
    let (dir, path) = fifo("long");
    let dir = dir.to_string_lossy().into_owned();
    let task = pool.try_submit(outlast_the_ack_wait, dir.clone()).unwrap();
    // Four progress acks, a third of the ack wait apart: the task has outlived the
    // ack wait, and was not delivered again meanwhile.
    let mut progress = 0;
    while progress < 4 {
        let ack = tokio::time::timeout(Duration::from_secs(60), acks.next())
            .await
            .expect("progress within a minute")
            .unwrap();
        if ack.payload.as_ref() == b"+WPI" {
            progress += 1;
        }
    }
    let release = path.clone();
    tokio::task::spawn_blocking(move || std::fs::write(release, b"\n").unwrap())
        .await
        .unwrap();
    let runs = task.await.unwrap();
    assert_eq!(runs, 1, "the task ran {runs} times");
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/runs"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submitted_twice_under_one_key_runs_once() {
    let server = NatsServer::start();
    let hosts = Hosts::start(&server.url, "dedup", 2);
    let pool = executor(&server.url, "dedup");
    let other = executor(&server.url, "dedup");
    pool.ready().await.unwrap();
    other.ready().await.unwrap();
    let (dir, path) = fifo("dedup");
    let dir = dir.to_string_lossy().into_owned();
    let keyed = |p: &ProcessPoolExecutor| {
        p.task(outlast_the_ack_wait)
            .idempotency_key("order-17")
            .try_submit(dir.clone())
            .unwrap()
    };
    let first = keyed(&pool);
    // Opening the FIFO for writing waits until the task opens it to read: it runs.
    let opened = path.clone();
    let mut release = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(opened)
            .unwrap()
    })
    .await
    .unwrap();
    // Again from this executor while the first is in flight: it waits for that run.
    let second = keyed(&pool);
    // Taken by the dispatcher (so following the first) before the first can end.
    tokio::time::timeout(Duration::from_secs(60), second.started())
        .await
        .expect("taken within a minute");
    // From another executor: the stream drops the copy, and says so.
    let elsewhere = tokio::time::timeout(Duration::from_secs(60), keyed(&other))
        .await
        .expect("an answer within a minute");
    match elsewhere {
        Err(TaskError::Remote(RemoteTaskError::Duplicate { key })) => assert_eq!(key, "order-17"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        release.write_all(b"\n").unwrap()
    })
    .await
    .unwrap();
    let within = |t| tokio::time::timeout(Duration::from_secs(60), t);
    let first = within(first).await.expect("first answered");
    assert_eq!(first.as_ref().ok(), Some(&1), "{first:?}");
    let second = within(second).await.expect("second answered");
    assert_eq!(second.as_ref().ok(), Some(&1), "{second:?}");
    // Once answered, the key is still taken within the window: a resubmit is dropped.
    let again = within(keyed(&pool))
        .await
        .expect("an answer within a minute");
    assert!(
        matches!(
            again,
            Err(TaskError::Remote(RemoteTaskError::Duplicate { .. }))
        ),
        "{again:?}"
    );
    let runs = std::fs::read_to_string(format!("{dir}/runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the task ran more than once");
    // A bad key fails before anything is sent.
    let bad = pool.task(square).idempotency_key("").try_submit(3);
    assert!(
        matches!(bad, Err(TaskError::InvalidArgument { .. })),
        "{bad:?}"
    );
    // Unkeyed tasks go on.
    assert_eq!(pool.run(square, 6).await.unwrap().0, 36);
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate authority, and a certificate it signed for 127.0.0.1, as PEM files
/// in `dir`: (the CA's certificate, the server's certificate, the server's key).
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_string_lossy().into_owned()
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("server.pem", cert.pem()),
        write("server-key.pem", key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_reach_the_server_and_an_untrusted_one_is_refused_at_connect() {
    let (dir, _) = fifo("tls");
    let (ca, cert, key) = tls_files(&dir);
    let server = NatsServer::start_with(&["--tls", "--tlscert", &cert, "--tlskey", &key]);
    // Not trusting the server's CA: a clear error at connect.
    let untrusting = ProcessPoolExecutor::builder()
        .nats(NatsOptions::new(&server.url).pool("tls").require_tls(true))
        .build()
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), untrusting.ready()).await {
        Ok(Err(procpool::Error::Remote { what, reason })) => {
            assert_eq!(what, "connect", "{reason}");
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("expected Error::Remote, got {other:?}"),
    }
    // Trusting it: a host and a submitter talk over TLS.
    let spec = HostSpec {
        tls_ca: Some(ca.clone()),
        ..HostSpec::new(&server.url, "tls")
    };
    let hosts = Hosts::start_spec(spec, 1);
    let pool = ProcessPoolExecutor::builder()
        .nats(
            NatsOptions::new(&server.url)
                .pool("tls")
                .require_tls(true)
                .tls_root_certificate(&ca),
        )
        .build()
        .unwrap();
    pool.ready().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), pool.run(square, 7))
        .await
        .expect("an answer within a minute");
    assert_eq!(answer.unwrap().0, 49);
    // A credentials file that is not there: a clear error at connect.
    let no_creds = ProcessPoolExecutor::builder()
        .nats(NatsOptions::new(&server.url).credentials_file(dir.join("missing.creds")))
        .build()
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), no_creds.ready()).await {
        Ok(Err(procpool::Error::Remote { what, reason })) => {
            assert_eq!(what, "read the credentials file");
            assert!(reason.contains("missing.creds"), "{reason}");
        }
        other => panic!("expected Error::Remote, got {other:?}"),
    }
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}
