//! How many instructions the kernel's verifier processed for each program, on
//! kernels that do not report it (`bpf_prog_info.verified_insns` is 5.16+).
//!
//! There the only witness is the verifier's own statistics line
//! ("processed N insns ..."), which it writes to a log buffer with log level
//! `BPF_LOG_STATS`. aya passes a log buffer only after a failed load, so for
//! this one figure the program is loaded a second time here, with the
//! instructions aya loaded (the same object, relocated against the same maps),
//! and that copy is closed at once. The sensor runs aya's copy.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::fd::RawFd,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya_obj::{Object, generated::bpf_insn};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_LOG_STATS: u32 = 4;

/// The leading part of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel
/// treats the fields a shorter attribute omits as zero.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The object, relocated the way aya relocated it, against the maps aya made.
pub struct Relocated {
    object: Object,
}

impl Relocated {
    /// `maps`: each map of the object by name, with the descriptor aya created.
    pub fn new(elf: &[u8], maps: &HashMap<String, RawFd>) -> Result<Self> {
        let mut object = Object::parse(elf).context("parsing the eBPF object")?;
        let text_sections: HashSet<usize> = object
            .functions
            .keys()
            .map(|(section, _)| *section)
            .collect();
        let objs = object.maps.clone();
        let with_fds = objs
            .iter()
            .map(|(name, map)| {
                let fd = maps
                    .get(name)
                    .with_context(|| format!("map `{name}` was not created"))?;
                Ok((name.as_str(), *fd, map))
            })
            .collect::<Result<Vec<_>>>()?;
        object
            .relocate_maps(with_fds.into_iter(), &text_sections)
            .map_err(|e| anyhow!("relocating maps: {e}"))?;
        object
            .relocate_calls(&text_sections)
            .map_err(|e| anyhow!("relocating calls: {e}"))?;
        object.sanitize_functions(aya::features());
        Ok(Self { object })
    }

    /// Loads `program` once more with the verifier's statistics on, and
    /// returns the instructions it processed.
    pub fn processed(&self, program: &str) -> Result<u32> {
        let prog = self
            .object
            .programs
            .get(program)
            .with_context(|| format!("no program `{program}` in the object"))?;
        let insns: &[bpf_insn] = &self.object.functions[&prog.function_key()].instructions;
        let license: &CString = &prog.license;
        let mut log = vec![0u8; 64 << 10];
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
            insn_cnt: u32::try_from(insns.len())?,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: BPF_LOG_STATS,
            log_size: u32::try_from(log.len())?,
            log_buf: log.as_mut_ptr() as u64,
            kern_version: 0,
            prog_flags: 0,
            prog_name: [0; 16],
        };
        // SAFETY: attr points to valid memory for the call; insns, license and
        // log outlive it. The descriptor returned is ours and closed below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &raw const attr,
                size_of::<ProgLoadAttr>(),
            )
        };
        let err = std::io::Error::last_os_error();
        if fd >= 0 {
            // SAFETY: a descriptor the kernel just gave us.
            unsafe { libc::close(fd as RawFd) };
        }
        let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]);
        match parse_processed(&text) {
            Some(n) => Ok(n),
            None if fd < 0 => bail!("loading `{program}` again for its statistics: {err}"),
            None => bail!("the verifier's log for `{program}` has no statistics line"),
        }
    }
}

/// "processed 12345 insns (limit 1000000) ..." -> 12345.
fn parse_processed(log: &str) -> Option<u32> {
    log.lines().rev().find_map(|line| {
        let rest = line.trim().strip_prefix("processed ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_statistics_line() {
        let log = "func#0 @0\nprocessed 20871 insns (limit 1000000) max_states_per_insn 4 \
                   total_states 1205 peak_states 623 mark_read 61\n";
        assert_eq!(super::parse_processed(log), Some(20871));
        assert_eq!(super::parse_processed("nothing"), None);
    }
}
