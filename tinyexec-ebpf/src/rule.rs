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

/// Every offset where `needle` occurs in `hay` (YARA reports each occurrence).
pub fn find_all(hay: &[u8], needle: &[u8]) -> impl Iterator<Item = usize> {
    let n = needle.len();
    let last = if n == 0 {
        0
    } else {
        (hay.len() + 1).saturating_sub(n)
    };
    (0..last).filter(move |&i| hay[i..i + n] == *needle)
}

/// What the first bytes of a file decide about the rule, before the rest is seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partial {
    /// The rule matches or not whatever the rest holds.
    Decided(Option<Match>),
    /// The unseen bytes decide.
    NeedRest,
}

/// Decides from a file's first bytes `head` and its size, where possible: a
/// missing string can only still occur if it can end in the unseen part with
/// its beginning agreeing with the end of `head`.
pub fn evaluate_prefix(head: &[u8], filesize: u64) -> Partial {
    if head.len() as u64 >= filesize {
        return Partial::Decided(evaluate(head));
    }
    if !size_can_match(filesize) || (head.len() >= MAGIC.len() && !head.starts_with(&MAGIC)) {
        return Partial::Decided(None);
    }
    if head.len() < MAGIC.len() {
        return Partial::NeedRest;
    }
    let (s1, s2) = (find(head, &S1), find(head, &S2));
    if let (Some(s1_offset), Some(s2_offset)) = (s1, s2) {
        return Partial::Decided(Some(Match {
            s1_offset,
            s2_offset,
        }));
    }
    let could_end_later = |s: &[u8]| {
        let size = usize::try_from(filesize).unwrap_or(usize::MAX);
        // Starts from which `s` ends past `head` and still fits in the file.
        let first = (head.len() + 1).saturating_sub(s.len());
        let last = size.saturating_sub(s.len());
        (first..=last).any(|start| {
            let seen = &head[start.min(head.len())..];
            s.starts_with(seen)
        })
    };
    if (s1.is_none() && !could_end_later(&S1)) || (s2.is_none() && !could_end_later(&S2)) {
        Partial::Decided(None)
    } else {
        Partial::NeedRest
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn file(len: usize, parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut v = std::vec![0u8; len];
        v[..4].copy_from_slice(&MAGIC);
        for (at, bytes) in parts {
            v[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        v
    }

    #[test]
    fn exact_rule() {
        assert_eq!(
            evaluate(&file(28, &[(4, &S1), (18, &S2)])),
            Some(Match {
                s1_offset: 4,
                s2_offset: 18
            })
        );
        assert!(evaluate(&file(269, &[(200, &S2), (255, &S1)])).is_some());
        assert!(evaluate(&file(270, &[(4, &S1), (18, &S2)])).is_none());
        assert!(evaluate(&file(100, &[(4, &S1)])).is_none());
        assert!(evaluate(&MAGIC).is_none());
        assert!(evaluate(&[]).is_none());
        let mut swapped = file(40, &[(4, &S1), (18, &S2)]);
        swapped[..4].reverse();
        assert!(evaluate(&swapped).is_none());
        assert_eq!(find_all(&[1, 1, 1], &[1, 1]).collect::<Vec<_>>(), [0, 1]);
    }

    /// The prefix decision never contradicts the whole-file decision.
    #[test]
    fn prefix_decisions_agree_with_whole_file() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut decided = 0;
        for _ in 0..20_000 {
            let len = 257 + (next() % 14) as usize;
            let s1_at = (next() % (len as u64 - 13)) as usize;
            let s2_at = (next() % (len as u64 - 9)) as usize;
            let mut parts: Vec<(usize, &[u8])> = Vec::new();
            if next() % 4 != 0 {
                parts.push((s1_at.max(4), &S1[..]));
            }
            if next() % 4 != 0 {
                parts.push((s2_at.max(4), &S2[..]));
            }
            let mut f = file(len, &parts);
            if next() % 8 == 0 {
                f[0] = 0;
            }
            let whole = evaluate(&f).is_some();
            for head in [256usize, 200, 3] {
                if let Partial::Decided(m) = evaluate_prefix(&f[..head], len as u64) {
                    decided += 1;
                    assert_eq!(m.is_some(), whole, "len {len} parts {parts:?} head {head}");
                }
            }
            assert!(evaluate_prefix(&f, len as u64) == Partial::Decided(evaluate(&f)));
        }
        assert!(decided > 1000);
    }
}
