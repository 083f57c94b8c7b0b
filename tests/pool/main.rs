//! The pool: submitting, mapping, pipelining, crashes, lifecycle and the wire protocol.
//! One binary for the area, so the crate is linked once for all of them.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod direct;
mod elastic;
mod fork_server;
mod lifecycle;
mod limits;
mod map;
mod pipeline;
mod protocol;
mod rendezvous;
mod ring;
mod service;
mod submit;
