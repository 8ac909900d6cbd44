//! The kernel side, seen from user space: everything before the first kernel
//! record. Checks the machine (`preflight`), reads the struct offsets the
//! program needs from the kernel's BTF (`btf`, `offsets`), chooses the cgroup
//! hierarchy (`cgroups`), then loads and attaches the program and opens the
//! maps user space reads (`loader`, with the bpf(2) calls in `bpf_sys`); the
//! kernel program's own diagnostics come out as log lines (`log`).
//! Uses no other folder of the daemon.

mod bpf_sys;
pub mod btf;
pub(crate) mod cgroups;
pub(crate) mod loader;
pub(crate) mod log;
mod offsets;
pub(crate) mod preflight;
