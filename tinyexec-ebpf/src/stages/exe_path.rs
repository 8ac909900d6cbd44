//! The executed file's absolute path, rebuilt from the dentries and mounts
//! the kernel opened (`path.rs`), not from the name given to exec.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tinyexec_ebpf::{ExecRecord, flags, stage};

use crate::{
    log::debug_if,
    maps::{CONFIG, next_stage, work_and_carry},
    path,
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]
pub fn tinyexec_exe_path(ctx: RawTracePointContext) -> i32 {
    if let Some((work, carry)) = work_and_carry() {
        let (len, path_flags) = unsafe { path::walk_into(work, carry, 0) };
        let rec: *const ExecRecord = work.cast();
        debug_if!(
            path_flags & flags::PATH_TRUNCATED != 0,
            &ctx,
            "pid {}: the executed file's path was cut short: {} bytes kept (--max-path-depth {}, \
             or a name unreadable or too long)",
            unsafe { (*rec).pid },
            len,
            unsafe { core::ptr::read_volatile(&raw const CONFIG.max_path_depth) }
        );
    }
    next_stage::<{ stage::PARENT_PATH }>(&ctx);
    0
}
