//! One file per program, in the order one exec runs them: the entry on
//! `sched_process_exec`, then the stages it tail-calls (`tinyexec_ebpf::stage`).
//!
//! The stages are written as raw tracepoint programs, and user space loads
//! them as the entry it loaded is (a BTF-typed tracepoint, or a raw one): a
//! program array takes programs of one type only. They read nothing from
//! their context, so the same code is right as either.

mod container;
mod deny;
mod emit;
mod exe_path;
mod exec;
mod parent_path;
