//! Kernel boot-clock timestamps to wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a local struct; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Converts `bpf_ktime_get_boot_ns()` values. Refreshed periodically, so clock
/// steps (NTP) reach the timestamps within one refresh.
#[derive(Debug)]
pub struct BootClock {
    /// realtime - boottime, in ns.
    offset: i128,
}

impl BootClock {
    pub fn new() -> Self {
        let mut c = Self { offset: 0 };
        c.refresh();
        c
    }

    pub fn refresh(&mut self) {
        self.offset = now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_BOOTTIME);
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let ns = (self.offset + i128::from(boot_ns)).max(0);
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// `CLOCK_BOOTTIME` now, ns: the clock of the kernel's `ktime_ns`.
pub fn boot_now_ns() -> u64 {
    u64::try_from(now_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
}

/// RFC 3339 with microseconds, UTC: what Sentinel and Elastic parse as `@timestamp`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}
