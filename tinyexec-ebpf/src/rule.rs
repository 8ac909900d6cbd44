//! The one definition of YARA rule `EQGRP_tinyexec` (spec/EQGRP_tinyexec.yar).
//!
//! ```text
//! $s1 = { 73 68 73 74 72 74 61 62 00 2E 74 65 78 74 }
//! $s2 = { 5A 58 55 52 89 E2 55 50 89 E1 }
//! condition: uint32(0) == 0x464c457f and filesize < 270 and all of them
//! ```
//! Every evaluator (the kernel's prevent check, the daemon, `scan`) uses these
//! constants and [`evaluate`]; nothing else restates the rule.

/// Name reported in alerts, as in the `.yar` file.
pub const NAME: &str = "EQGRP_tinyexec";
/// `uint32(0) == 0x464c457f`: YARA's `uint32` is little-endian, so the file starts `7F 45 4C 46`.
pub const MAGIC: [u8; 4] = 0x464c_457f_u32.to_le_bytes();
/// `filesize < 270`: strict.
pub const FILESIZE_LT: u64 = 270;
/// `$s1`: "shstrtab\0.text".
pub const S1: [u8; 14] = [
    0x73, 0x68, 0x73, 0x74, 0x72, 0x74, 0x61, 0x62, 0x00, 0x2E, 0x74, 0x65, 0x78, 0x74,
];
/// `$s2`.
pub const S2: [u8; 10] = [0x5A, 0x58, 0x55, 0x52, 0x89, 0xE2, 0x55, 0x50, 0x89, 0xE1];

/// Whether a file of `filesize` bytes can match at all; the kernel filters on this.
pub const fn size_can_match(filesize: u64) -> bool {
    filesize < FILESIZE_LT
}

/// First offset of `needle` in `hay`, scanning every position (YARA's hex
/// strings match at any offset, overlapping or not).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()] == *needle)
}

/// Where each string matched, when the rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub s1_offset: usize,
    pub s2_offset: usize,
}

/// Evaluates the rule on a whole file's content (`content.len()` is its size).
pub fn evaluate(content: &[u8]) -> Option<Match> {
    if !size_can_match(content.len() as u64) || !content.starts_with(&MAGIC) {
        return None;
    }
    Some(Match {
        s1_offset: find(content, &S1)?,
        s2_offset: find(content, &S2)?,
    })
}
