//! `examples/service.rs`, the axum service, driven with real HTTP requests from a real
//! client: its answers, a task that panics, a burst past the queue, and a graceful stop.

#[path = "common/mod.rs"]
mod common;

// The example itself, its `main` unused here.
#[path = "../examples/service.rs"]
#[allow(dead_code)]
mod service;

use std::time::Duration;

use procpool::ProcessPoolExecutor;
use tokio::sync::oneshot;

/// The service on 127.0.0.1 and a free port, stopped when `stop` is sent.
struct Running {
    base: String,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), String>>,
}

async fn start(pool: ProcessPoolExecutor) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let served = tokio::spawn(async move {
        service::serve(listener, pool, shutdown, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())
    });
    Running { base, stop, served }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Option<String>, String) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_answers_and_survives_a_panicking_task() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let running = start(pool.clone()).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", running.base);

    assert_eq!(
        get(&client, &url("/fib/20")).await,
        (200, None, "6765\n".into())
    );
    let (status, _, body) = get(&client, &url("/panic")).await;
    assert_eq!(status, 500);
    assert!(body.contains("this request always fails"), "{body}");
    // The service and the pool go on.
    assert_eq!(
        get(&client, &url("/fib/30")).await,
        (200, None, "832040\n".into())
    );
    let (status, _, body) = get(&client, &url("/fib/93")).await;
    assert_eq!((status, body.as_str()), (400, "n must be at most 92\n"));
    let (status, _, body) = get(&client, &url("/stats")).await;
    assert_eq!(status, 200);
    assert!(body.contains("panicked: 1"), "{body}");

    running.stop.send(()).unwrap();
    running.served.await.unwrap().unwrap();
    assert!(pool.is_shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_queue_gets_503_and_a_stop_drains_what_was_taken() {
    const QUEUE: usize = 4;
    const BURST: usize = 10;
    // The only worker is held until this task is cancelled.
    let (pool, blocker) = common::held_pool(QUEUE).await;
    let running = start(pool.clone()).await;
    let client = reqwest::Client::new();

    let mut burst: futures::stream::FuturesUnordered<_> = (0..BURST)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{}/fib/{}", running.base, 20 + i));
            async move { get(&client, &url).await }
        })
        .collect();
    // Nothing leaves the queue while the worker is held: QUEUE requests wait in it,
    // and every other one is refused at once.
    use futures::StreamExt;
    for _ in 0..BURST - QUEUE {
        let (status, retry, _) = burst.next().await.unwrap();
        assert_eq!((status, retry.as_deref()), (503, Some("1")));
    }
    assert_eq!(pool.stats().queued, QUEUE as u64);

    // Stop taking requests, then free the worker: the ones taken are answered.
    running.stop.send(()).unwrap();
    blocker.cancel();
    let mut answered = 0;
    while let Some((status, _, body)) = burst.next().await {
        assert_eq!(status, 200, "{body}");
        answered += 1;
    }
    assert_eq!(answered, QUEUE);
    running.served.await.unwrap().unwrap();
    assert!(pool.is_shutdown());
    let s = pool.stats();
    assert_eq!(
        (s.completed, s.queued, s.running),
        (QUEUE as u64, 0, 0),
        "{s:?}"
    );
}
