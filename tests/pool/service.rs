//! The pool inside a service: a clonable handle, streams that outlive the call that
//! made them.

use std::future::IntoFuture;

use futures::StreamExt;
use procpool::{ProcessPoolExecutor, TaskError};

fn square(x: u64) -> u64 {
    x * x
}

/// What an axum `State` or a spawned task asks of a value.
fn assert_service_state<T: Clone + Send + Sync + 'static>() {}

#[test]
fn the_pool_and_its_streams_fit_in_service_state_and_spawned_tasks() {
    assert_service_state::<ProcessPoolExecutor>();
    fn assert_spawnable<T: Send + 'static>(_: &T) {}
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    assert_spawnable(&pool.map_unordered(square, 0..3u64));
    assert_spawnable(&pool.map(square, vec![1u64]).into_future());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_one_pool_and_the_last_one_owns_it() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let handler = pool.clone();
    assert_eq!(handler.run(square, 7).await.unwrap(), 49);
    assert_eq!(pool.run(square, 8).await.unwrap(), 64);
    // One set of counters: each clone sees what the other did.
    assert_eq!(pool.stats().completed, 2);
    assert_eq!(handler.stats().completed, 2);

    // Dropping a clone is not dropping the pool.
    drop(handler);
    assert_eq!(pool.run(square, 9).await.unwrap(), 81);

    // Shutting down through one clone shuts the pool for all of them.
    let other = pool.clone();
    other.shutdown().await;
    assert!(pool.is_shutdown());
    assert!(matches!(
        pool.run(square, 1).await,
        Err(TaskError::Shutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_stream_keeps_the_pool_alive_until_it_ends() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let stream = pool.map_unordered(square, 0..20u64).chunk_size(3);
    let ordered = pool.map(square, 0..10u64);
    // The only named handle goes away; the stream and the map hold the pool.
    drop(pool);
    let spawned = tokio::spawn(stream.collect::<Vec<_>>());
    let mapped = tokio::spawn(async move { ordered.await });
    let mut got: Vec<u64> = spawned
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..20u64).map(square).collect::<Vec<_>>());
    assert_eq!(
        mapped.await.unwrap().unwrap(),
        (0..10u64).map(square).collect::<Vec<_>>()
    );
}
