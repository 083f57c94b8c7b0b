//! The crate's shape: public types and their errors, the module layers, and what must
//! not compile.

#[path = "../common/mod.rs"]
mod common;

mod compile_fail;
mod module_layers;
mod types;
