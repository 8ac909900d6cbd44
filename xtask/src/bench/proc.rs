//! What a process under measurement (the sensor or a peer) costs: its CPU
//! time, peak RSS and BPF programs, read from /proc. The process itself is
//! the harness's [`tinyexec_harness::process::Proc`].

use std::{
    collections::BTreeMap,
    fs, thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// `run_time_ns` and `run_cnt` of one BPF program (`kernel.bpf_stats_enabled`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgStats {
    /// What ran between `earlier` and these.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
        }
    }
}

/// User + system CPU of the whole process (all threads), in clock ticks.
pub fn cpu_ticks(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu(&stat).with_context(|| format!("parsing {path}: {stat}"))
}

/// User CPU of the whole process (all threads), in clock ticks.
pub fn user_ticks(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_user(&stat).with_context(|| format!("parsing {path}: {stat}"))
}

/// Peak resident set size (`VmHWM`), KiB.
pub fn vm_hwm_kib(pid: i32) -> Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident set size now (`VmRSS`), KiB.
pub fn vm_rss_kib(pid: i32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status`.
pub fn status_kib(pid: i32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in {path}"))
}

/// CPU time of the whole process, ns, from its CPU-time clock
/// (`clock_getcpuclockid`): exact, where /proc/PID/stat counts 10 ms ticks.
pub fn cpu_ns(pid: i32) -> Result<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: out-pointer to a local.
    let r = unsafe { libc::clock_getcpuclockid(pid, &raw mut clock) };
    if r != 0 {
        bail!(
            "clock_getcpuclockid({pid}): {}",
            std::io::Error::from_raw_os_error(r)
        );
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: out-pointer to a local.
    if unsafe { libc::clock_gettime(clock, &raw mut ts) } != 0 {
        bail!("CPU clock of {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(u64::try_from(ts.tv_sec)? * 1_000_000_000 + u64::try_from(ts.tv_nsec)?)
}

/// Waits until the process has caught up with what the storm gave it: less
/// than 1 ms of CPU over the last `quiet` (longer than the sensor's 200 ms
/// tick, which drains batched records), at most `max`.
pub fn wait_idle(pid: i32, quiet: Duration, max: Duration) -> Result<()> {
    let step = Duration::from_millis(50);
    let window = (quiet.as_millis() / step.as_millis()).max(1) as usize;
    let deadline = Instant::now() + max;
    let mut samples = vec![cpu_ns(pid)?];
    while Instant::now() < deadline {
        thread::sleep(step);
        samples.push(cpu_ns(pid)?);
        if samples.len() > window
            && samples[samples.len() - 1] - samples[samples.len() - 1 - window] < 1_000_000
        {
            break;
        }
    }
    Ok(())
}

/// The BPF programs a process holds open, by program id, with their run
/// statistics (from `/proc/PID/fdinfo`; counted while `kernel.bpf_stats_enabled` is 1).
pub fn bpf_progs(pid: i32) -> BTreeMap<u32, ProgStats> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in entries.flatten() {
        let is_prog =
            fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("bpf-prog"));
        if !is_prog {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
        if let Some((id, stats)) = fs::read_to_string(info).ok().and_then(|t| parse_fdinfo(&t)) {
            out.insert(id, stats);
        }
    }
    out
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat; the name in field 2 may hold spaces).
fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// utime alone (field 14).
fn parse_stat_user(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(11)?.parse().ok()
}

/// One BPF program descriptor's figures (`/proc/PID/fdinfo/FD`).
pub fn fd_prog_stats(pid: i32, fd: i32) -> Option<ProgStats> {
    let text = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    parse_fdinfo(&text).map(|(_, s)| s)
}

fn parse_fdinfo(text: &str) -> Option<(u32, ProgStats)> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let id = u32::try_from(get("prog_id:")?).ok()?;
    Some((
        id,
        ProgStats {
            run_time_ns: get("run_time_ns:").unwrap_or(0),
            run_cnt: get("run_cnt:").unwrap_or(0),
        },
    ))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_name() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 10";
        assert_eq!(parse_stat_cpu(stat), Some(10));
        assert_eq!(parse_stat_user(stat), Some(7));
    }

    #[test]
    fn cpu_clock_of_this_process() {
        let pid = std::process::id().cast_signed();
        let a = cpu_ns(pid).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_ns(pid).unwrap() > a);
    }

    #[test]
    fn fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_id:\t77\nrun_time_ns:\t1234\nrun_cnt:\t10\n";
        let (id, s) = parse_fdinfo(text).unwrap();
        assert_eq!((id, s.run_time_ns, s.run_cnt), (77, 1234, 10));
    }
}
