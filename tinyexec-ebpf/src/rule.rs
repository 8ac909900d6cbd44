//! The one definition of YARA rule `EQGRP_tinyexec` (`spec/EQGRP_tinyexec.yar`).
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
/// [`FILESIZE_LT`] as a buffer length.
#[expect(clippy::cast_possible_truncation, reason = "270 fits any usize")]
pub const FILESIZE_LT_LEN: usize = FILESIZE_LT as usize;
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

/// The search automaton for both strings at once (Aho-Corasick, as a table),
/// built at compile time from [`S1`] and [`S2`]. Its state is the longest end
/// of the input read so far that begins one of the strings: 0 for none, `k` for
/// `S1[..k]`, `S1.len() + k` for `S2[..k]`. The kernel walks it over the
/// header with one table load per byte, no loop nested in another and no
/// branch per byte, which its verifier checks cheaply.
#[derive(Debug)]
pub struct Automaton {
    /// `next[state * ROW + byte]`: the next state, with [`FOUND_S1`] /
    /// [`FOUND_S2`] set when that byte ends the string.
    pub next: [u8; AUTOMATON_STATES * ROW],
    /// Per state, how many of `S1`'s first bytes the input ends with (and of `S2`'s).
    pub s1_prefix: [u8; AUTOMATON_STATES],
    pub s2_prefix: [u8; AUTOMATON_STATES],
}

/// States, rounded up to a power of two so a mask bounds every index.
pub const AUTOMATON_STATES: usize = 32;
/// Entries per state: one more than the byte values. With rows of 256 the
/// index would be `state << 8 | byte`, and verifiers before 6.2 lose the bounds
/// of an OR with a register they know (Debian 12's 6.1 refuses the program:
/// "math between `map_value` pointer and register with unbounded min value");
/// `state * 257 + byte` is plain arithmetic every verifier bounds.
const ROW: usize = 257;
#[expect(
    clippy::cast_possible_truncation,
    reason = "const context (no try_from); 32 states"
)]
const STATE_MASK: u32 = AUTOMATON_STATES as u32 - 1;
/// Flag bits of [`Automaton::next`] entries, above the state number.
pub const FOUND_S1: u32 = 1 << 5;
pub const FOUND_S2: u32 = 1 << 6;
const _: () = assert!(1 + S1.len() + S2.len() <= AUTOMATON_STATES);
// The kernel leaves the header buffer zero past the end of a short file; a
// string whose last byte is not zero cannot end in that padding.
const _: () = assert!(S1[S1.len() - 1] != 0 && S2[S2.len() - 1] != 0);

/// The longest `k <= max` such that the last `k` bytes of `w[..len]` are `pat[..k]`.
const fn longest_end_beginning(w: &[u8], len: usize, pat: &[u8], max: usize) -> usize {
    let mut k = if len < max { len } else { max };
    while k > 0 {
        let mut i = 0;
        while i < k && w[len - k + i] == pat[i] {
            i += 1;
        }
        if i == k {
            return k;
        }
        k -= 1;
    }
    0
}

impl Automaton {
    /// The string a state stands for, into `w`; returns its length.
    const fn spell(state: usize, w: &mut [u8; 16]) -> usize {
        let (pat, len): (&[u8], usize) = if state <= S1.len() {
            (&S1, state)
        } else {
            (&S2, state - S1.len())
        };
        let mut i = 0;
        while i < len {
            w[i] = pat[i];
            i += 1;
        }
        len
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "const fn (no try_from): states are < AUTOMATON_STATES (asserted above), \
                  entries with their flags < 128, bytes < 256"
    )]
    const fn build() -> Self {
        let mut next = [0u8; AUTOMATON_STATES * ROW];
        let mut s1_prefix = [0u8; AUTOMATON_STATES];
        let mut s2_prefix = [0u8; AUTOMATON_STATES];
        let states = 1 + S1.len() + S2.len();
        let mut state = 0;
        while state < states {
            let mut w = [0u8; 16];
            let len = Self::spell(state, &mut w);
            s1_prefix[state] = longest_end_beginning(&w, len, &S1, S1.len()) as u8;
            s2_prefix[state] = longest_end_beginning(&w, len, &S2, S2.len()) as u8;
            let mut byte = 0;
            while byte < 256 {
                w[len] = byte as u8;
                // The strings start with different bytes: at most one can be begun
                // by a given end of the input, and the longer end wins.
                let k1 = longest_end_beginning(&w, len + 1, &S1, S1.len());
                let k2 = longest_end_beginning(&w, len + 1, &S2, S2.len());
                let entry = if k1 == S1.len() {
                    // Found: go on from the longest end that begins a string again.
                    let again = longest_end_beginning(&w, len + 1, &S1, S1.len() - 1);
                    let again2 = longest_end_beginning(&w, len + 1, &S2, S2.len() - 1);
                    (if again >= again2 {
                        again
                    } else {
                        S1.len() + again2
                    }) as u32
                        | FOUND_S1
                } else if k2 == S2.len() {
                    let again = longest_end_beginning(&w, len + 1, &S1, S1.len() - 1);
                    let again2 = longest_end_beginning(&w, len + 1, &S2, S2.len() - 1);
                    (if again >= again2 {
                        again
                    } else {
                        S1.len() + again2
                    }) as u32
                        | FOUND_S2
                } else if k1 >= k2 {
                    k1 as u32
                } else {
                    (S1.len() + k2) as u32
                };
                next[state * ROW + byte] = entry as u8;
                byte += 1;
            }
            state += 1;
        }
        Self {
            next,
            s1_prefix,
            s2_prefix,
        }
    }

    /// The entry for `byte` in `state` (flags included; the state is masked off them).
    #[inline(always)]
    fn step(&self, state: u32, byte: u8) -> u32 {
        u32::from(self.next[((state & STATE_MASK) as usize) * ROW + byte as usize])
    }
}

pub static AUTOMATON: Automaton = Automaton::build();

/// Bytes the header scan takes per step of its outer loop: the loop leaves
/// early (past the end of a short file) only between chunks, so the verifier
/// sees 16 ways out of it, not 256.
const CHUNK: usize = 16;
const _: () = assert!(HEADER_LEN.is_multiple_of(CHUNK));

/// Words of [`HEADER_LEN`] bytes.
const WORDS: usize = HEADER_LEN / 8;
/// A byte repeated in every byte of a word.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}
const LOW: u64 = splat(0x01);
const HIGH: u64 = splat(0x80);

/// What the kernel sees of a file that starts with `f`: its first
/// [`HEADER_LEN`] bytes, in the buffer it zeroes first, and how many of
/// them are the file's. For user space and tests; the kernel has its own.
#[must_use]
pub fn header_of(f: &[u8]) -> ([u8; HEADER_LEN], usize) {
    let seen = f.len().min(HEADER_LEN);
    let mut buf = [0u8; HEADER_LEN];
    buf[..seen].copy_from_slice(&f[..seen]);
    (buf, seen)
}

/// Bytes `8 * j ..` of a header buffer as a little-endian word.
///
/// The kernel's copy sits 8-aligned in its work area (`RECORD_FIXED` and
/// the LSM program's stack buffer are), and an aligned load is one
/// instruction where the BPF back end splits an unaligned one into eight.
#[inline(always)]
pub fn word(header: &[u8; HEADER_LEN], j: usize) -> u64 {
    let at = (j * 8) & (HEADER_LEN - 8);
    #[cfg(target_arch = "bpf")]
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "every kernel caller's buffer is 8-aligned (see above)"
    )]
    {
        // SAFETY: in bounds (masked); aligned, see above.
        unsafe { header.as_ptr().add(at).cast::<u64>().read() }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    }
}

/// `f(j)` for every word index but the first in turn, written out, until
/// one returns false: the typed kernel entry reads the words with loads at
/// constant offsets (its verifier refuses a variable one into a kernel
/// struct), which a loop the compiler may keep would not give.
macro_rules! while_words_after_first {
    ($f:expr) => {{
        let mut f = $f;
        let _ = f(1)
            && f(2)
            && f(3)
            && f(4)
            && f(5)
            && f(6)
            && f(7)
            && f(8)
            && f(9)
            && f(10)
            && f(11)
            && f(12)
            && f(13)
            && f(14)
            && f(15)
            && f(16)
            && f(17)
            && f(18)
            && f(19)
            && f(20)
            && f(21)
            && f(22)
            && f(23)
            && f(24)
            && f(25)
            && f(26)
            && f(27)
            && f(28)
            && f(29)
            && f(30)
            && f(31);
    }};
}
const _: () = assert!(WORDS == 32);

/// Words looked at between two tests of the file's end. Without those tests
/// the typed entry did not build: LLVM ran out of its 512-byte BPF stack.
const WORDS_PER_TEST: usize = 4;

/// Whether `S2`'s first two bytes stand side by side in `header[..seen]` of
/// a header buffer whose words `word` gives (`first`: `word(0)`, already
/// read). A first look that costs a fraction of [`scan`]: eight positions
/// at a time (SWAR), the same few instructions for every word, no chain
/// from byte to byte. Past the file's end the kernel leaves zeros; it stops
/// there a few words late, and whatever a buffer holds there can only add
/// a hit, which [`scan`] then weighs within the file's bytes.
#[inline(always)]
fn has_s2_start(first: u64, word: impl Fn(usize) -> u64, seen: usize) -> bool {
    const FIRST: u64 = splat(S2[0]);
    const SECOND: u64 = splat(S2[1]);
    // A byte of `x` is zero where the pair stands; `(x - LOW) & !x` has the
    // high bit of some byte set exactly when one of x's bytes is zero.
    let pair_at = |this: u64, next: u64| {
        // Byte k of `shifted` is byte k + 1 of the buffer: the word's last
        // position pairs with the next word's first byte.
        let shifted = (this >> 8) | (next << 56);
        let x = (this ^ FIRST) | (shifted ^ SECOND);
        x.wrapping_sub(LOW) & !x
    };
    let mut hits = 0u64;
    let mut this = first;
    while_words_after_first!(|j: usize| {
        if j.is_multiple_of(WORDS_PER_TEST) && j * 8 >= seen {
            return false;
        }
        let next = word(j);
        hits |= pair_at(this, next);
        this = next;
        true
    });
    // The last word read pairs with a zero (the next byte is past the
    // file, or past the buffer): never S2[1].
    hits |= pair_at(this, 0);
    hits & HIGH != 0
}

/// Whether a file's first `seen` bytes (`seen = min(filesize, HEADER_LEN)`)
/// already rule the match out, before any [`scan`]: a size that cannot
/// match, no magic, or a whole file without `S2`'s first two bytes side by
/// side. `word(j)` gives the buffer's bytes `8 * j ..` as a little-endian
/// word ([`word`] on a copy; the typed kernel entry loads them from the
/// kernel's own buffer, with no copy).
#[inline(always)]
pub fn ruled_out(word: impl Fn(usize) -> u64, seen: usize, filesize: u64) -> bool {
    if !size_can_match(filesize) || seen < MAGIC.len() {
        return true;
    }
    let first = word(0);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the magic is the first 4 bytes"
    )]
    if first as u32 != u32::from_le_bytes(MAGIC) {
        return true;
    }
    seen as u64 >= filesize && !has_s2_start(first, word, seen)
}
const _: () = assert!(S2[1] != 0);

/// What one pass over a header found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    pub found_s1: bool,
    pub found_s2: bool,
    /// How many of each string's first bytes the header ends with.
    pub s1_prefix: u32,
    pub s2_prefix: u32,
}

/// One pass of the automaton over `header[..seen]`, where the buffer is zero
/// from `seen` on (as the kernel leaves `linux_binprm::buf`): the scan may read
/// up to a chunk of that padding, which can never end a string. The prefix
/// fields describe the end of the pass, so they speak of the file's end only
/// when `seen` is the whole buffer, the one case they are needed (a file
/// longer than the header).
#[inline(always)]
pub fn scan(header: &[u8; HEADER_LEN], seen: usize) -> Scan {
    let (mut state, mut found) = (0u32, 0u32);
    let mut chunk = 0;
    while chunk < HEADER_LEN / CHUNK {
        let base = chunk * CHUNK;
        if base >= seen {
            break;
        }
        let mut k = 0;
        while k < CHUNK {
            state = AUTOMATON.step(state, header[(base + k) & (HEADER_LEN - 1)]);
            found |= state;
            k += 1;
        }
        chunk += 1;
    }
    let end = (state & STATE_MASK) as usize;
    Scan {
        found_s1: found & FOUND_S1 != 0,
        found_s2: found & FOUND_S2 != 0,
        s1_prefix: u32::from(AUTOMATON.s1_prefix[end]),
        s2_prefix: u32::from(AUTOMATON.s2_prefix[end]),
    }
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

/// Decides the rule from a file's first `seen` bytes, `header[..seen]`, with
/// `seen = min(filesize, HEADER_LEN)`, as far as they can: a string not in the
/// header can still occur only if it fits in the unseen bytes, or ends there
/// with its beginning agreeing with the end of the header (the automaton's
/// state says how much of it the header ends with). The kernel (prevent mode,
/// and which records wake user space) and user space decide with this one function.
#[inline(always)]
pub fn header_verdict(header: &[u8; HEADER_LEN], seen: usize, filesize: u64) -> HeaderVerdict {
    if ruled_out(|j| word(header, j), seen, filesize) {
        return HeaderVerdict::NoMatch;
    }
    let found = scan(header, seen);
    if found.found_s1 && found.found_s2 {
        return HeaderVerdict::Match;
    }
    let unseen = filesize.saturating_sub(seen as u64);
    let can_still_occur = |found: bool, prefix: u32, len: usize| {
        found || unseen >= len as u64 || (prefix > 0 && u64::from(prefix) + unseen >= len as u64)
    };
    if unseen > 0
        && can_still_occur(found.found_s1, found.s1_prefix, S1.len())
        && can_still_occur(found.found_s2, found.s2_prefix, S2.len())
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

    #[test]
    fn the_automaton_finds_the_strings_anywhere() {
        let at = |f: &[u8]| {
            let (buf, seen) = header_of(f);
            scan(&buf, seen)
        };
        let both = [&MAGIC[..], &S1, &S2].concat();
        let r = at(&both);
        assert!(r.found_s1 && r.found_s2);
        // False starts right before each string, and the strings overlapping them.
        let tricky = [&S1[..5], &S1, &S2[..3], &S2[..7], &S2].concat();
        let r = at(&tricky);
        assert!(r.found_s1 && r.found_s2, "{r:?}");
        // What the header ends with (the whole 256 bytes, as for a longer file).
        let ending = |tail: &[u8]| {
            let mut f = std::vec![0x55u8; HEADER_LEN - tail.len()];
            f.extend_from_slice(tail);
            at(&f)
        };
        let r = ending(&[&S2[..9], &S1[..13]].concat());
        assert!(!r.found_s1 && !r.found_s2);
        assert_eq!((r.s1_prefix, r.s2_prefix), (13, 0));
        let r = ending(&[&S1[..], &S2[..4]].concat());
        assert_eq!((r.found_s1, r.s2_prefix), (true, 4));
        // Every reachable state (a found string moves on at once) tells a
        // proper beginning of each string.
        for state in
            (0..1 + S1.len() + S2.len()).filter(|&s| s != S1.len() && s != S1.len() + S2.len())
        {
            assert!(usize::from(AUTOMATON.s1_prefix[state]) < S1.len());
            assert!(usize::from(AUTOMATON.s2_prefix[state]) < S2.len());
        }
    }

    /// The one header decision (what the kernel runs) agrees with the slow
    /// reference and never contradicts the whole-file rule.
    #[test]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "random offsets, taken modulo a length"
    )]
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
            if got == HeaderVerdict::NeedRest {
                assert!(len > HEADER_LEN);
            } else {
                assert_eq!(got, whole, "len {len} file {f:02x?}");
            }
            counts[got as usize - 1] += 1;
        }
        assert!(counts.iter().all(|&c| c > 1000), "{counts:?}");
    }

    #[test]
    fn the_word_filter_finds_the_pair_at_every_position() {
        let naive = |h: &[u8; HEADER_LEN], seen: usize| {
            (0..seen).any(|i| h[i] == S2[0] && i + 1 < HEADER_LEN && h[i + 1] == S2[1])
        };
        for seen in [0, 1, 2, 7, 8, 9, 15, 16, 17, 129, 255, 256] {
            for at in 0..HEADER_LEN {
                // The pair, a lone first byte (no pair), and the pair with its
                // second byte past `seen` (zero there, as the kernel leaves it).
                for (a, b) in [(S2[0], S2[1]), (S2[0], 0x11), (0x11, S2[1])] {
                    let mut h = [0x58u8; HEADER_LEN];
                    h[at] = a;
                    if at + 1 < HEADER_LEN {
                        h[at + 1] = b;
                    }
                    h[seen..].fill(0);
                    let got = has_s2_start(word(&h, 0), |j| word(&h, j), seen);
                    assert_eq!(got, naive(&h, seen), "seen {seen} at {at}");
                }
            }
        }
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
