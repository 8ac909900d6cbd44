//! The rule, evaluated in the kernel on the header buffer: prevent mode kills
//! on it, and every mode wakes user space at once only for records it may alert on.
//!
//! Complete for files of at most 256 bytes, and decisive whenever both strings
//! lie inside the header; anything else is left to user space. Plain nested
//! loops: the verifier accepts them and they are much faster than bpf_loop.

use tinyexec_ebpf::{HEADER_LEN, rule};

/// Whether the file starts with the ELF magic `uint32(0)` asks for.
#[inline(always)]
pub(crate) fn has_magic(buf: &[u8; HEADER_LEN]) -> bool {
    buf[0] == rule::MAGIC[0]
        && buf[1] == rule::MAGIC[1]
        && buf[2] == rule::MAGIC[2]
        && buf[3] == rule::MAGIC[3]
}

/// Whether the first `seen` bytes of `buf` satisfy the rule (the size limit is
/// checked by the caller).
#[inline(always)]
pub(crate) fn matches(buf: &[u8; HEADER_LEN], seen: usize) -> bool {
    seen >= rule::MAGIC.len()
        && has_magic(buf)
        && contains(buf, seen, &rule::S1)
        && contains(buf, seen, &rule::S2)
}

/// Whether `needle` occurs in `buf[..seen]`.
#[inline(always)]
fn contains<const L: usize>(buf: &[u8; HEADER_LEN], seen: usize, needle: &[u8; L]) -> bool {
    let mut i = 0;
    while i + L <= seen && i + L <= HEADER_LEN {
        let mut j = 0;
        // The mask is a no-op (i + j < HEADER_LEN); it lets the verifier see the bound.
        while j < L && buf[(i + j) & (HEADER_LEN - 1)] == needle[j] {
            j += 1;
        }
        if j == L {
            return true;
        }
        i += 1;
    }
    false
}
