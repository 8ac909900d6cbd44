//! tinyexec's kernel programs: a raw tracepoint on `sched_process_exec` and
//! the stages it tail-calls, one file each in `stages/`.
//!
//! The tracepoint fires once per successful execve/execveat, after the new
//! image is committed and before it runs its first instruction, so what we read
//! here is what really runs. Kernel struct offsets come from the running
//! kernel's BTF, handed over by user space in the read-only global `OFFSETS`.
//!
//! The work is split into programs the verifier checks one by one (see
//! `tinyexec_ebpf::stage`): what one path walk does is then verified once, not
//! once for every way the walk before it can end. One exec runs them in this
//! order, each handing over to the next through the per-CPU work area
//! (`maps.rs`):
//!
//! - `stages/exec.rs`: the entry, on every exec: the filter, the rule on the
//!   file's header, prevent mode's kill, the identity of the process and file
//!   and its namespaces;
//! - `stages/exe_path.rs`, `stages/parent_path.rs`: the executed file's path
//!   and the parent's executable's (the walk itself is `path.rs`);
//! - `stages/container.rs`: in-namespace pids, the cgroup;
//! - `stages/emit.rs`: the arguments, and the record into the ring buffer.
//!
//! Each stage logs its rare paths with aya-log (`log.rs`), for
//! `--log-level debug`; below that the verifier prunes every log call.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "the kernel side bounds its values with the masks and comparisons the verifier \
                  follows; a try_from is one more branch for it, and a pointer is a u64 here"
    )
)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::inline_always,
        reason = "eBPF code: each helper is inlined into its program (BPF-to-BPF calls mix with tail calls only from kernel 5.10 on)"
    )
)]

#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod log;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod path;
#[cfg(target_arch = "bpf")]
mod stages;

/// The eBPF programs use GPL-only helpers; the code is MIT and GPL.
#[cfg(target_arch = "bpf")]
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic.
    unsafe { core::hint::unreachable_unchecked() }
}

/// On the host this target is a stub: the real object is built for `bpfel-unknown-none`.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("tinyexec-ebpf is eBPF bytecode; build it with `cargo xtask build`");
    std::process::exit(2);
}
