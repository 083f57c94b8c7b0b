//! An axum HTTP service that offloads CPU-heavy requests to the pool.
//!
//! - `GET /fib/{n}` computes a Fibonacci number in a worker (n up to 92).
//! - `GET /panic` runs a task that panics: the answer is a 500, and the service and
//!   the pool go on.
//! - `GET /stats` shows the pool's counters.
//!
//! A full queue is a 503 with `Retry-After`, found at once with `try_submit` rather
//! than waited out. On Ctrl-C the service stops taking requests, answers those it
//! has, and drains the pool (at most 30 s, then it kills what is left).
//!
//! ```text
//! cargo run --release --example service -- --addr 127.0.0.1:3000 --workers 2 --queue 64
//! curl http://127.0.0.1:3000/fib/40
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use procpool::{ProcessPoolExecutor, TaskError};

/// The largest `n` whose Fibonacci number fits a `u64`.
const MAX_FIB: u64 = 92;

/// Deliberately slow: the CPU-heavy work the service offloads.
fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1).wrapping_add(fib(n - 2))
    }
}

fn panics(_: ()) -> u64 {
    panic!("this request always fails")
}

/// The service's routes over a pool (a clone of it, as `State`).
fn app(pool: ProcessPoolExecutor) -> Router {
    Router::new()
        .route("/fib/{n}", get(fib_handler))
        .route("/panic", get(panic_handler))
        .route("/stats", get(stats_handler))
        .with_state(pool)
}

async fn fib_handler(State(pool): State<ProcessPoolExecutor>, Path(n): Path<u64>) -> Response {
    if n > MAX_FIB {
        let why = format!("n must be at most {MAX_FIB}\n");
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    offload(pool.try_submit(fib, n)).await
}

async fn panic_handler(State(pool): State<ProcessPoolExecutor>) -> Response {
    offload(pool.try_submit(panics, ())).await
}

async fn stats_handler(State(pool): State<ProcessPoolExecutor>) -> String {
    format!("{:#?}\n", pool.stats())
}

/// The answer to a task submitted with `try_submit`: its value, or the status that
/// says why there is none.
async fn offload(submitted: Result<procpool::TaskHandle<u64>, TaskError>) -> Response {
    let result = match submitted {
        Ok(handle) => handle.await,
        Err(e) => Err(e),
    };
    match result {
        Ok(value) => (StatusCode::OK, format!("{value}\n")).into_response(),
        Err(TaskError::QueueFull { .. }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "busy: the work queue is full, retry shortly\n",
        )
            .into_response(),
        Err(TaskError::Shutdown | TaskError::ShutdownTimedOut { .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
        }
        Err(TaskError::Panicked(p)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the task failed: {}\n", p.message),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the task failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Serves `pool` on `listener` until `shutdown` resolves, answers the requests it
/// has, then drains the pool for at most `drain`.
///
/// # Errors
/// The server's I/O error, or the pool's if it did not drain in time.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    pool: ProcessPoolExecutor,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    axum::serve(listener, app(pool.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    pool.shutdown_timeout(drain).await?;
    Ok(())
}

struct Args {
    addr: SocketAddr,
    workers: Option<usize>,
    queue: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        workers: None,
        queue: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--workers" => args.workers = Some(value.parse().map_err(|e| bad(&e))?),
            "--queue" => args.queue = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = parse_args()?;
    let mut builder = ProcessPoolExecutor::builder().queue_capacity(args.queue);
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    let pool = builder.build()?;
    pool.ready().await?;
    // Listen for Ctrl-C before taking requests, so that none is cut off by it.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!(
        "listening on http://{} with {} workers, queue {}",
        listener.local_addr()?,
        pool.workers(),
        args.queue
    );
    let shutdown = async move {
        interrupt.recv().await;
        println!("interrupted: answering what is in flight, then draining the pool");
    };
    serve(listener, pool, shutdown, Duration::from_secs(30)).await?;
    println!("drained; bye");
    Ok(())
}
