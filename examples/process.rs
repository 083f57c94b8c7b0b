//! The seeds' `multiprocessing.Process` scenarios, with procpool's `Process`:
//! 1. start and join several children, each printing its pid and its parent's pid;
//! 2. data isolation: a global changed in a child is unchanged in the parent;
//! 3. a daemonic child dies with its parent (a helper process that exits);
//! 4. terminate a child that would run forever.
//!
//! ```text
//! cargo run --example process
//! ```

use std::sync::{LazyLock, Mutex};

use procpool::{Exit, Process, ProcessError};

fn run(label: String) -> u32 {
    println!(
        "  {label}: I am {} (pid {}), my parent is {:?}",
        procpool::current_process().name,
        std::process::id(),
        procpool::parent_process()
    );
    std::process::id()
}

static NUM: Mutex<i32> = Mutex::new(250);
static LIST: LazyLock<Mutex<Vec<&str>>> = LazyLock::new(|| Mutex::new(vec!["hello"]));

fn change_globals(_: ()) -> (i32, Vec<String>) {
    let mut num = NUM.lock().unwrap();
    let mut list = LIST.lock().unwrap();
    *num += 10;
    list.push("world");
    println!("  child: num = {num}, list = {list:?}");
    (*num, list.iter().map(|s| s.to_string()).collect())
}

fn sleep_forever(_: ()) -> u32 {
    loop {
        std::thread::park();
    }
}

/// The helper parent of scenario 3: starts a daemonic child, reports its pid, exits.
fn parent_of_a_daemon(_: ()) -> u32 {
    let daemon = Process::builder()
        .daemon(true)
        .spawn(sleep_forever, ())
        .unwrap();
    let pid = daemon.pid();
    println!(
        "  helper {}: started daemon {pid}, now exiting",
        std::process::id()
    );
    std::mem::forget(daemon); // exit without dropping it: the kernel must do the work
    pid
}

fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("1. parent process {}", std::process::id());
    let mut children = Vec::new();
    for i in 0..3 {
        children.push(Process::spawn(run, format!("child {i}"))?);
    }
    for child in &mut children {
        let pid = child.join().await?;
        println!(
            "  joined {} (pid {pid}), exit {:?}",
            child.name(),
            child.exit_code()
        );
    }

    println!("2. data isolation (a child starts from a fresh copy of the program, like");
    println!("   Python's 'spawn' start method: it sees the globals' initial values)");
    println!(
        "  parent before: num = {}, list = {:?}",
        NUM.lock().unwrap(),
        LIST.lock().unwrap()
    );
    let mut child = Process::spawn(change_globals, ())?;
    let (num, list) = child.join().await?;
    println!("  child returned: num = {num}, list = {list:?}");
    println!(
        "  parent after:  num = {}, list = {:?}",
        NUM.lock().unwrap(),
        LIST.lock().unwrap()
    );
    assert_eq!(*NUM.lock().unwrap(), 250);

    println!("3. a daemonic child dies with its parent");
    let mut helper = Process::spawn(parent_of_a_daemon, ())?;
    let daemon = helper.join().await?;
    println!("  helper exited ({:?})", helper.exit_code());
    // The kernel kills the daemon when the helper exits; wait for it to go.
    let mut waited = std::time::Duration::ZERO;
    while is_running(daemon) && waited < std::time::Duration::from_secs(5) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += std::time::Duration::from_millis(10);
    }
    println!(
        "  daemon {daemon} running after its parent exited: {}",
        is_running(daemon)
    );

    println!("4. terminate");
    let mut forever = Process::spawn(sleep_forever, ())?;
    println!("  {} alive: {}", forever.name(), forever.is_alive());
    forever.terminate()?;
    match forever.join().await {
        Err(ProcessError::Died {
            exit: Exit::Signal(sig),
        }) => {
            println!(
                "  {} ended by signal {sig}; alive: {}",
                forever.name(),
                forever.is_alive()
            )
        }
        other => println!("  unexpected: {other:?}"),
    }
    println!("active children left: {:?}", procpool::active_children());
    Ok(())
}
