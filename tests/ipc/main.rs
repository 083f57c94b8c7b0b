//! Shared state between processes: pipes, queues, shared memory, locks and other sync
//! primitives, connections and the manager.

#[path = "../common/mod.rs"]
mod common;

mod connection;
mod manager;
mod manager_family;
mod pipe;
mod pipe_ring;
mod python_interop;
mod queue;
mod shm;
mod sync;
