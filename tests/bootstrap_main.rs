//! User `main` never runs in a worker, and `init()` is a no-op where it should be.
//!
//! This test has its own `main` (no libtest harness): `main` marks a static as soon as
//! it starts, and a task reports the worker's view of that mark. Were the worker
//! routed through `main`, the mark would be set there too.

use std::sync::atomic::{AtomicBool, Ordering};

use procpool::{Process, ProcessPoolExecutor};

static MAIN_RAN: AtomicBool = AtomicBool::new(false);

fn main_ran_here(_: ()) -> bool {
    MAIN_RAN.load(Ordering::SeqCst)
}

fn init_returns(_: ()) -> bool {
    procpool::init(); // in a worker: already running, returns at once
    true
}

fn main() {
    procpool::init(); // in the parent: a no-op
    MAIN_RAN.store(true, Ordering::SeqCst);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut passed = 0;
    rt.block_on(async {
        let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
        assert!(
            !pool.run(main_ran_here, ()).await.unwrap(),
            "main ran in a pool worker"
        );
        passed += 1;
        assert!(pool.run(init_returns, ()).await.unwrap());
        passed += 1;
        pool.shutdown().await;
        let mut child = Process::spawn(main_ran_here, ()).unwrap();
        assert!(!child.join().await.unwrap(), "main ran in a Process child");
        passed += 1;
    });
    assert!(main_ran_here(()), "main ran in the parent");
    passed += 1;
    println!("bootstrap_main: {passed} passed, 0 failed");
}
