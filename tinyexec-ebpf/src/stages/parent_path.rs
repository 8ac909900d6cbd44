//! The parent process's executable's path (its `mm->exe_file`), walked as
//! the executed file's is.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tinyexec_ebpf::stage;

use crate::{
    kernel::{off, read},
    maps::{next_stage, work_and_carry},
    path,
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]
pub fn tinyexec_parent_path(ctx: RawTracePointContext) -> i32 {
    if let Some((work, carry)) = work_and_carry() {
        let parent = unsafe { (*carry).parent } as usize;
        unsafe { path::walk_into(work, carry, 1, parent_exe(parent)) };
    }
    next_stage(&ctx, stage::CONTAINER);
    0
}

/// The parent process's executable file (`mm->exe_file`); None for kernel threads.
#[inline(always)]
fn parent_exe(parent: usize) -> Option<usize> {
    let mm: usize = read(parent, off!(task_mm)).ok()?;
    if mm == 0 {
        return None;
    }
    let file: usize = read(mm, off!(mm_exe_file)).ok()?;
    (file != 0).then_some(file)
}
