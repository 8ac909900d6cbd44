//! One file per program, in the order one exec runs them: the entry on
//! `sched_process_exec`, then the stages it tail-calls (`tinyexec_ebpf::stage`).

mod container;
mod emit;
mod exe_path;
mod exec;
mod parent_path;
