//! The executed file's absolute path, rebuilt from the dentries and mounts
//! the kernel opened (`path.rs`), not from the name given to exec.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tinyexec_ebpf::stage;

use crate::{
    maps::{next_stage, work_and_carry},
    path,
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]
pub fn tinyexec_exe_path(ctx: RawTracePointContext) -> i32 {
    if let Some((work, carry)) = work_and_carry() {
        let file = unsafe { (*carry).file } as usize;
        unsafe { path::walk_into(work, carry, 0, Some(file)) };
    }
    next_stage(&ctx, stage::PARENT_PATH);
    0
}
