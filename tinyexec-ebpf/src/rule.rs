//! The one definition of YARA rule `EQGRP_tinyexec` (spec/EQGRP_tinyexec.yar).
//!
//! ```text
//! $s1 = { 73 68 73 74 72 74 61 62 00 2E 74 65 78 74 }
//! $s2 = { 5A 58 55 52 89 E2 55 50 89 E1 }
//! condition: uint32(0) == 0x464c457f and filesize < 270 and all of them
//! ```
//! Every evaluator uses these constants: [`evaluate`] on a whole file (`scan`,
//! and the daemon once it has every byte), [`header_verdict`] on the kernel's
//! 256-byte header buffer (the kernel program and the daemon alike). Nothing
//! else restates the rule.

use crate::HEADER_LEN;

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

/// A search automaton for one of the rule's strings (Knuth-Morris-Pratt, as a
/// table): the state after a byte is how many of the string's first bytes the
/// input read so far ends with, and the state `len` (found) never changes again.
/// The kernel walks both automata over the header in one pass, with no loop
/// nested in another and no branch per byte, which its verifier checks cheaply.
pub struct Automaton {
    /// The string's length: the found state.
    pub len: u32,
    /// `next[state << 8 | byte]`.
    pub next: [u8; AUTOMATON_STATES * 256],
}

/// States per automaton; every string of the rule is shorter.
pub const AUTOMATON_STATES: usize = 16;

impl Automaton {
    /// Builds the table for `string` at compile time.
    pub const fn new(string: &[u8]) -> Self {
        let len = string.len();
        assert!(len > 0 && len < AUTOMATON_STATES);
        let mut next = [0u8; AUTOMATON_STATES * 256];
        next[string[0] as usize] = 1;
        // The state the automaton would be in had it not read the string's first byte.
        let mut restart = 0;
        let mut state = 1;
        while state < len {
            let mut byte = 0;
            while byte < 256 {
                next[state << 8 | byte] = next[restart << 8 | byte];
                byte += 1;
            }
            next[state << 8 | string[state] as usize] = (state + 1) as u8;
            restart = next[restart << 8 | string[state] as usize] as usize;
            state += 1;
        }
        let mut byte = 0;
        while byte < 256 {
            next[len << 8 | byte] = len as u8;
            byte += 1;
        }
        Self {
            len: len as u32,
            next,
        }
    }

    /// The state after `byte`; `keep` (all ones) leaves `state` as it is,
    /// without a branch: bytes past the end of the file.
    #[inline(always)]
    fn step(&self, state: u32, byte: u8, keep: u32) -> u32 {
        let next =
            u32::from(self.next[((state as usize) & (AUTOMATON_STATES - 1)) << 8 | byte as usize]);
        (next & !keep) | (state & keep)
    }
}

pub static S1_AUTOMATON: Automaton = Automaton::new(&S1);
pub static S2_AUTOMATON: Automaton = Automaton::new(&S2);

/// Bytes the header scan takes per step of its outer loop: the loop leaves
/// early (past the end of a short file) only between chunks, so the verifier
/// sees 16 ways out of it, not 256.
const CHUNK: usize = 16;
const _: () = assert!(HEADER_LEN % CHUNK == 0);

/// The final states of both automata over `header[..seen]`.
#[inline(always)]
pub fn scan(header: &[u8; HEADER_LEN], seen: usize) -> (u32, u32) {
    let (mut s1, mut s2) = (0u32, 0u32);
    let mut chunk = 0;
    while chunk < HEADER_LEN / CHUNK {
        let base = chunk * CHUNK;
        if base >= seen {
            break;
        }
        let mut k = 0;
        while k < CHUNK {
            let i = base + k;
            // All ones from `seen` on (seen <= HEADER_LEN < 2^31): those bytes are not the file's.
            let keep = ((i as u32).wrapping_sub(seen as u32) >> 31).wrapping_sub(1);
            let byte = header[i & (HEADER_LEN - 1)];
            s1 = S1_AUTOMATON.step(s1, byte, keep);
            s2 = S2_AUTOMATON.step(s2, byte, keep);
            k += 1;
        }
        chunk += 1;
    }
    (s1, s2)
}

/// What the kernel's header buffer decides about the rule. The discriminants
/// are what kernel records carry (`ExecRecord::kernel_verdict`; 0: none).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderVerdict {
    /// The rule matches whatever the rest of the file holds.
    Match = 1,
    /// The rule cannot match.
    NoMatch = 2,
    /// The bytes past the header decide (a file of 257-269 bytes).
    NeedRest = 3,
}

impl HeaderVerdict {
    /// From a kernel record's `kernel_verdict`.
    pub const fn from_wire(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Match),
            2 => Some(Self::NoMatch),
            3 => Some(Self::NeedRest),
            _ => None,
        }
    }
}

/// Whether the header starts with the ELF magic `uint32(0)` asks for.
#[inline(always)]
pub fn has_magic(header: &[u8; HEADER_LEN]) -> bool {
    header[0] == MAGIC[0] && header[1] == MAGIC[1] && header[2] == MAGIC[2] && header[3] == MAGIC[3]
}

/// Decides the rule from a file's first `seen` bytes, `header[..seen]`, with
/// `seen = min(filesize, HEADER_LEN)`, as far as they can: a string not in the
/// header can still occur only if it fits in the unseen bytes, or ends there
/// with its beginning agreeing with the end of the header (the automaton's
/// state says how much of it the header ends with). The kernel (prevent mode,
/// and which records wake user space) and user space decide with this one function.
#[inline(always)]
pub fn header_verdict(header: &[u8; HEADER_LEN], seen: usize, filesize: u64) -> HeaderVerdict {
    if !size_can_match(filesize) || seen < MAGIC.len() || !has_magic(header) {
        return HeaderVerdict::NoMatch;
    }
    let (s1, s2) = scan(header, seen);
    let (found1, found2) = (s1 == S1_AUTOMATON.len, s2 == S2_AUTOMATON.len);
    if found1 && found2 {
        return HeaderVerdict::Match;
    }
    let unseen = filesize.saturating_sub(seen as u64);
    let can_still_occur = |found: bool, state: u32, len: u32| {
        found
            || unseen >= u64::from(len)
            || (state > 0 && u64::from(state) + unseen >= u64::from(len))
    };
    if unseen > 0
        && can_still_occur(found1, s1, S1_AUTOMATON.len)
        && can_still_occur(found2, s2, S2_AUTOMATON.len)
    {
        HeaderVerdict::NeedRest
    } else {
        HeaderVerdict::NoMatch
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

    /// The header decision, restated the slow way for the property test: every
    /// start at which a missing string could still end past the header.
    fn reference(head: &[u8], filesize: u64) -> HeaderVerdict {
        let decided = |m: Option<Match>| {
            if m.is_some() {
                HeaderVerdict::Match
            } else {
                HeaderVerdict::NoMatch
            }
        };
        if head.len() as u64 >= filesize {
            return decided(evaluate(head));
        }
        if !size_can_match(filesize) || !head.starts_with(&MAGIC) {
            return HeaderVerdict::NoMatch;
        }
        let (s1, s2) = (find(head, &S1), find(head, &S2));
        if s1.is_some() && s2.is_some() {
            return HeaderVerdict::Match;
        }
        let could_end_later = |s: &[u8]| {
            let size = usize::try_from(filesize).unwrap();
            let first = (head.len() + 1).saturating_sub(s.len());
            let last = size.saturating_sub(s.len());
            (first..=last).any(|start| s.starts_with(&head[start.min(head.len())..]))
        };
        if (s1.is_none() && !could_end_later(&S1)) || (s2.is_none() && !could_end_later(&S2)) {
            HeaderVerdict::NoMatch
        } else {
            HeaderVerdict::NeedRest
        }
    }

    /// What the kernel sees of `f`: its first 256 bytes, in the 256-byte buffer.
    fn header_of(f: &[u8]) -> ([u8; HEADER_LEN], usize) {
        let seen = f.len().min(HEADER_LEN);
        let mut buf = [0xAAu8; HEADER_LEN];
        buf[..seen].copy_from_slice(&f[..seen]);
        (buf, seen)
    }

    #[test]
    fn automata_find_the_strings_anywhere() {
        for (i, (a, s)) in [(&S1_AUTOMATON, &S1[..]), (&S2_AUTOMATON, &S2[..])]
            .into_iter()
            .enumerate()
        {
            let mut state = 0;
            for &b in s {
                state = a.step(state, b, 0);
            }
            assert_eq!(state, a.len, "string {i}");
            // Overlapping restarts: a false start followed by the string.
            let mut state = 0;
            for &b in s[..s.len() - 1].iter().chain(s.iter()) {
                state = a.step(state, b, 0);
            }
            assert_eq!(state, a.len, "string {i} after a false start");
            // Bytes past the end leave the state alone.
            assert_eq!(a.step(3, s[3], u32::MAX), 3);
        }
    }

    /// The one header decision (what the kernel runs) agrees with the slow
    /// reference and never contradicts the whole-file rule.
    #[test]
    fn header_verdict_agrees_with_reference_and_whole_file() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut counts = [0usize; 3];
        for round in 0..60_000 {
            let len = match round % 4 {
                0 => 257 + (next() % 13) as usize,
                1 => (next() % 270) as usize,
                2 => 240 + (next() % 40) as usize,
                _ => 255 + (next() % 4) as usize,
            };
            let mut f: Vec<u8> = (0..len)
                .map(|_| [0u8, 0x55, 0x89, 0x2E][(next() % 4) as usize])
                .collect();
            if len >= 4 && next() % 8 != 0 {
                f[..4].copy_from_slice(&MAGIC);
            }
            for s in [&S1[..], &S2[..]] {
                // Whole, cut at the header's end (a decoy), or absent.
                match next() % 4 {
                    0 | 1 if len >= 4 + s.len() => {
                        let at = 4 + (next() as usize % (len - 4 - s.len() + 1));
                        f[at..at + s.len()].copy_from_slice(s);
                    }
                    2 if len > HEADER_LEN => {
                        let k = 1 + (next() as usize % (s.len() - 1));
                        if HEADER_LEN >= k + 4 {
                            f[HEADER_LEN - k..HEADER_LEN].copy_from_slice(&s[..k]);
                        }
                    }
                    _ => {}
                }
            }
            let (buf, seen) = header_of(&f);
            let got = header_verdict(&buf, seen, len as u64);
            assert_eq!(
                got,
                reference(&f[..seen], len as u64),
                "len {len} file {f:02x?}"
            );
            let whole = if evaluate(&f).is_some() {
                HeaderVerdict::Match
            } else {
                HeaderVerdict::NoMatch
            };
            if got != HeaderVerdict::NeedRest {
                assert_eq!(got, whole, "len {len} file {f:02x?}");
            } else {
                assert!(len > HEADER_LEN);
            }
            counts[got as usize - 1] += 1;
        }
        assert!(counts.iter().all(|&c| c > 1000), "{counts:?}");
    }

    #[test]
    fn decoy_tails_are_decided_from_the_header() {
        // Ends in the first 6 bytes of $s2 with 4 bytes left: still possible.
        let mut f = file(260, &[(100, &S1)]);
        f[250..256].copy_from_slice(&S2[..6]);
        let (buf, seen) = header_of(&f);
        assert_eq!(header_verdict(&buf, seen, 260), HeaderVerdict::NeedRest);
        // 5 bytes of $s2 and 4 left: cannot complete.
        let mut f = file(260, &[(100, &S1)]);
        f[251..256].copy_from_slice(&S2[..5]);
        let (buf, seen) = header_of(&f);
        assert_eq!(header_verdict(&buf, seen, 260), HeaderVerdict::NoMatch);
    }
}
