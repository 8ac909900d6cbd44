//! The kernel side, seen from user space.

mod bpf_sys;
pub mod btf;
pub(crate) mod cgroups;
pub(crate) mod loader;
mod offsets;
pub(crate) mod preflight;
