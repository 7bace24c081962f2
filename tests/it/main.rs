//! cairn's integration tests: one binary, a temporary directory per test, the real `cairn`
//! binary driven through its CLI (and the library called directly where that is the point).

mod core;
mod crash;
mod errors;
mod pages;
mod props;
mod tar_edge;
mod upgrade;
mod util;
