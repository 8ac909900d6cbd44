//! The kernel's figures on BPF programs: `bpf_stats` switched on for the
//! bench, and which programs ran (bpftool).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    process::Command,
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tinyexec_ebpf::names;

use super::proc;
use crate::{
    cmd::{find_cmd, output_of},
    step,
};

/// `kernel.bpf_stats_enabled` = 1 for the bench, the old value restored on drop.
pub struct BpfStats {
    old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let old = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        step(&format!(
            "kernel.bpf_stats_enabled = 1 for the bench (was {old}; restored after)"
        ));
        Ok(Self { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if fs::write(BPF_STATS, &self.old).is_ok() {
            step(&format!(
                "kernel.bpf_stats_enabled restored to {}",
                self.old
            ));
        }
    }
}

/// Every loaded BPF program's name and run count (bpftool; counted while `bpf_stats` is on).
pub fn prog_counts() -> Option<BTreeMap<u64, (String, u64)>> {
    let out = output_of(Command::new(find_cmd("bpftool")?).args(["-j", "prog", "show"]))?;
    let v: Value = serde_json::from_str(&out).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|p| {
                let id = p.get("id")?.as_u64()?;
                let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
                let cnt = p.get("run_cnt").and_then(Value::as_u64).unwrap_or(0);
                Some((id, (name.to_owned(), cnt)))
            })
            .collect(),
    )
}

/// Ids of the sensor's entry programs (`tinyexec_exec`, or
/// `tinyexec_rawtp` where the kernel refuses the typed one: bpftool names
/// them); every program it holds if bpftool cannot say.
pub fn sensor_programs(pid: libc::pid_t) -> BTreeSet<u32> {
    let ids: BTreeSet<u32> = proc::bpf_progs(pid).into_keys().collect();
    let named: BTreeSet<u32> = ids
        .iter()
        .copied()
        .filter(|id| prog_name(*id).is_some_and(|n| n == names::PROGRAM || n == names::PROGRAM_RAW))
        .collect();
    if named.is_empty() { ids } else { named }
}

fn prog_name(id: u32) -> Option<String> {
    let out = output_of(
        Command::new(find_cmd("bpftool")?)
            .args(["-j", "prog", "show", "id"])
            .arg(id.to_string()),
    )?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v.get("name")?.as_str().map(str::to_owned)
}
