//! The kernel program's diagnostics (`--log-level debug`): aya-log-ebpf's
//! `debug!`, on rare branches only.
//!
//! Each log call first reads `AYA_LOG_LEVEL`, a read-only global user space
//! sets below debug unless asked (in the frozen map that also holds
//! `OFFSETS` and `CONFIG`): the verifier then knows every log call
//! unreachable and never walks it, so logging costs nothing when off, not
//! even verified instructions.

/// `aya_log_ebpf::debug!(ctx, ...)` when `cond` holds, with the level looked
/// at before `cond`. A branch on a value the program did not branch on before
/// costs verified instructions even when never taken: the verifier must then
/// tell apart the states that differ in that value, and prunes fewer (2,200
/// more in the container stage). With the level first and off, it never gets
/// to `cond`. `black_box` keeps the compiler from testing `cond` first, which
/// it otherwise does (it has no side effects to keep in order).
macro_rules! debug_if {
    ($cond:expr, $ctx:expr, $($message:tt)+) => {
        if aya_log_ebpf::macro_support::level_enabled(aya_log_ebpf::macro_support::Level::Debug)
            && core::hint::black_box($cond)
        {
            aya_log_ebpf::debug!($ctx, $($message)+);
        }
    };
}
pub(crate) use debug_if;
