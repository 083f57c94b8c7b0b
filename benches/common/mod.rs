//! Set-up shared by the benches.
#![allow(dead_code)]

use procpool::ProcessPoolExecutor;

/// The runtime every bench drives procpool from: two worker threads, all drivers.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A pool of `workers` processes, started and ready, built on `rt`.
pub(crate) fn ready_pool(rt: &tokio::runtime::Runtime, workers: usize) -> ProcessPoolExecutor {
    rt.block_on(async {
        let pool = ProcessPoolExecutor::builder()
            .workers(workers)
            .build()
            .unwrap();
        pool.ready().await.unwrap();
        pool
    })
}
