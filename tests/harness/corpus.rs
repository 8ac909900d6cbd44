//! The test corpus for rule `EQGRP_tinyexec`: files on both sides of every edge
//! of the rule (magic, `filesize < 270`, each string, the 256 bytes the kernel
//! sees before the image runs), built from code so the repository ships no
//! malware-looking blobs.
//!
//! Each sample's verdict is stated by the code that builds it, never computed
//! by a matcher, so the corpus can judge every matcher (ours and `yara`).
//!
//! Names end in `-len<N>` (the file size), so a verdict in a log is readable
//! without opening the file.

use std::{
    fmt, fs, io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use tinyexec_ebpf::rule::{FILESIZE_LT_LEN, MAGIC, S1, S2};

use crate::elf::{Action, Arch, TinyElf};

pub struct Sample {
    /// Unique, filesystem-safe, descriptive (e.g. "filesize-both-at-end-len269").
    pub name: String,
    pub bytes: Vec<u8>,
    /// What YARA must say, known from how the sample was built (never computed by calling our matcher).
    pub expect_match: bool,
    /// Some(arch) for tiny ELFs that really execute and exit 0 on this machine.
    pub runnable: Option<Arch>,
}

impl fmt::Debug for Sample {
    /// Without the bytes: a 1 MiB dump helps nobody reading a failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sample")
            .field("name", &self.name)
            .field("len", &self.bytes.len())
            .field("expect_match", &self.expect_match)
            .field("runnable", &self.runnable)
            .finish()
    }
}

/// Largest size that can match (269).
const MAX_MATCH: usize = FILESIZE_LT_LEN - 1;
/// Bytes of the file the kernel has in hand at exec (`BINPRM_BUF_SIZE`); what
/// lies past it must be read back from the file.
const HEAD: usize = 256;
/// Where the "other" string goes when a sample is about one string only.
const EARLY: usize = 8;
/// How long runnable samples whose verdict needs bytes past [`HEAD`] stay
/// alive, so a reader of /proc/PID/exe still finds them.
const TAIL_SLEEP_MS: u32 = 300;

/// Fixed-seed xorshift64: "random" filler that is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "random bytes: the low byte of each draw"
    )]
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// `filler` with `parts` written at their offsets; panics on overlap so a
/// layout mistake cannot silently break a string.
fn layout(mut filler: Vec<u8>, parts: &[(usize, &[u8])]) -> Vec<u8> {
    let mut used = vec![false; filler.len()];
    for &(at, bytes) in parts {
        let range = at..at + bytes.len();
        assert!(
            range.end <= filler.len(),
            "part at {at} overflows {}",
            filler.len()
        );
        assert!(
            used[range.clone()].iter().all(|u| !u),
            "overlapping parts at {at}"
        );
        used[range.clone()].fill(true);
        filler[range].copy_from_slice(bytes);
    }
    filler
}

/// A file of `len` zero bytes starting with the magic, with `parts` placed.
fn elf_data(len: usize, parts: &[(usize, &[u8])]) -> Vec<u8> {
    let mut all = vec![(0, &MAGIC[..])];
    all.extend_from_slice(parts);
    layout(vec![0; len], &all)
}

/// `s` with one bit of byte `i` flipped.
fn flipped(s: &[u8], i: usize, bit: u8) -> Vec<u8> {
    let mut v = s.to_vec();
    v[i] ^= bit;
    v
}

/// `s` with `extra` inserted before byte `i`.
fn split(s: &[u8], i: usize, extra: u8) -> Vec<u8> {
    [&s[..i], &[extra], &s[i..]].concat()
}

fn padded(mut v: Vec<u8>, len: usize) -> Vec<u8> {
    v.resize(len, 0);
    v
}

/// Collects samples, adding the `-len<N>` suffix.
#[derive(Default)]
struct Corpus(Vec<Sample>);

impl Corpus {
    fn data(&mut self, name: &str, bytes: Vec<u8>, expect_match: bool) {
        self.push(name, bytes, expect_match, None);
    }

    fn push(&mut self, name: &str, bytes: Vec<u8>, expect_match: bool, runnable: Option<Arch>) {
        self.0.push(Sample {
            name: format!("{name}-len{}", bytes.len()),
            bytes,
            expect_match,
            runnable,
        });
    }

    /// A tiny ELF with `trailer` at its end. Files of 257–269 bytes sleep first:
    /// their verdict needs bytes past [`HEAD`], read while the process lives.
    fn run(&mut self, name: &str, arch: Arch, trailer: Vec<u8>, len: Option<usize>, matches: bool) {
        let mut t = TinyElf {
            trailer,
            total_len: len,
            ..TinyElf::new(arch)
        };
        let size = len.unwrap_or_else(|| t.min_len());
        if (HEAD + 1..=MAX_MATCH).contains(&size) {
            t.actions = vec![Action::SleepMs(TAIL_SLEEP_MS)];
        }
        let bytes = t.build().unwrap_or_else(|e| panic!("{name}: {e}"));
        let prefix = match arch {
            Arch::X86_64 => "elf64",
            Arch::I386 => "elf32",
            Arch::Aarch64 => "elf64-aarch64",
        };
        let verdict = if matches { "match" } else { "nomatch" };
        self.push(
            &format!("{prefix}-run-{verdict}-{name}"),
            bytes,
            matches,
            Some(arch),
        );
    }
}

/// The whole corpus, deterministic (same bytes every call).
pub fn corpus() -> Vec<Sample> {
    let mut c = Corpus::default();
    let (s1, s2) = (&S1[..], &S2[..]);

    // Too short for the magic, then exactly the magic.
    c.data("tiny-empty", vec![], false);
    for n in 1..MAGIC.len() {
        c.data("tiny-magic-prefix", MAGIC[..n].to_vec(), false);
    }
    c.data("tiny-magic-only", MAGIC.to_vec(), false);

    // Smallest sizes: 28 is the least that holds magic and both strings.
    let both = [&MAGIC[..], s1, s2].concat();
    c.data("minimal-s2-cut-short", both[..27].to_vec(), false);
    c.data("minimal-smallest-match", both.clone(), true);
    c.data("minimal-s2-before-s1", [&MAGIC[..], s2, s1].concat(), true);

    // `filesize < 270`, with the strings early and at the very end.
    let early = |len| elf_data(len, &[(16, s1), (40, s2)]);
    let at_end = |len: usize| elf_data(len, &[(len - 24, s1), (len - 10, s2)]);
    for len in [255, 256, 257, 268, MAX_MATCH] {
        c.data("filesize-both-early", early(len), true);
        c.data("filesize-both-at-end", at_end(len), true);
    }
    for len in [270, 271] {
        c.data(
            "filesize-both-early-padded",
            padded(early(MAX_MATCH), len),
            false,
        );
        c.data(
            "filesize-both-at-end-padded",
            padded(at_end(MAX_MATCH), len),
            false,
        );
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let noisy = layout(rng.bytes(MAX_MATCH), &[(0, &MAGIC), (100, s2), (200, s1)]);
    c.data("filesize-random-filler", noisy.clone(), true);
    c.data("filesize-random-filler-padded", padded(noisy, 270), false);
    for len in [4096, 1 << 20] {
        c.data("large-both-early", early(len), false);
        c.data("large-both-at-end", at_end(len), false);
    }

    // The magic: `uint32(0)` is little-endian and anchored at offset 0.
    let body = |magic: &[u8]| layout(vec![0; 64], &[(0, magic), (16, s1), (40, s2)]);
    c.data("magic-ok", body(&MAGIC), true);
    c.data(
        "magic-wrong-7f454c47",
        body(&[0x7F, 0x45, 0x4C, 0x47]),
        false,
    );
    c.data(
        "magic-swapped-464c457f",
        body(&[0x46, 0x4C, 0x45, 0x7F]),
        false,
    );
    c.data(
        "magic-shifted-by-one",
        body(&[0x00, 0x7F, 0x45, 0x4C, 0x46]),
        false,
    );
    c.data("magic-missing", body(&[]), false);

    // Each string: absent, cut, damaged, repeated, adjacent to the other.
    const L: usize = 100;
    for (name, s, other) in [("s1", s1, s2), ("s2", s2, s1)] {
        let n = s.len();
        let one = |bytes: &[u8]| elf_data(L, &[(EARLY, other), (40, bytes)]);
        c.data(
            &format!("strings-{name}-absent"),
            elf_data(L, &[(EARLY, other)]),
            false,
        );
        c.data(
            &format!("strings-{name}-truncated-at-eof"),
            elf_data(L, &[(EARLY, other), (L - (n - 1), &s[..n - 1])]),
            false,
        );
        for (i, bit) in [(0, 0x20), (n / 2, 0x01), (n - 1, 0x80)] {
            c.data(
                &format!("strings-{name}-bitflip-byte{i}"),
                one(&flipped(s, i, bit)),
                false,
            );
        }
        let mid = n / 2;
        c.data(
            &format!("strings-{name}-split-by-cc"),
            one(&split(s, mid, 0xCC)),
            false,
        );
        // The inserted byte repeats its neighbour: a naive restart would skip it.
        c.data(
            &format!("strings-{name}-split-by-repeat"),
            one(&split(s, mid, s[mid - 1])),
            false,
        );
        c.data(
            &format!("strings-{name}-twice"),
            elf_data(L, &[(EARLY, other), (40, s), (70, s)]),
            true,
        );
        // A partial occurrence right before the real one (search restart bugs).
        c.data(
            &format!("strings-{name}-after-own-prefix"),
            one(&[&s[..mid], s].concat()),
            true,
        );
    }
    c.data(
        "strings-s1-then-s2-adjacent",
        elf_data(L, &[(40, s1), (54, s2)]),
        true,
    );
    c.data(
        "strings-s2-then-s1-adjacent",
        elf_data(L, &[(40, s2), (50, s1)]),
        true,
    );

    // Offset 256: what the kernel has at exec versus what must be read back.
    for (name, s, other) in [("s1", s1, s2), ("s2", s2, s1)] {
        let n = s.len();
        let at = |len, off| elf_data(len, &[(EARLY, other), (off, s)]);
        for len in [HEAD + 1, MAX_MATCH] {
            c.data(
                &format!("boundary-{name}-ends-at-256"),
                at(len, HEAD - n),
                true,
            );
        }
        // $s1 starting at 256 needs 270 bytes: too big to match.
        let len = HEAD + n;
        c.data(
            &format!("boundary-{name}-starts-at-256"),
            at(len, HEAD),
            len < 270,
        );
        if len < MAX_MATCH {
            c.data(
                &format!("boundary-{name}-starts-at-256"),
                at(MAX_MATCH, HEAD),
                true,
            );
        }
        for len in [250 + n, MAX_MATCH] {
            c.data(
                &format!("boundary-{name}-straddles-256"),
                at(len, 250),
                true,
            );
        }
        c.data(
            &format!("boundary-{name}-at-end"),
            at(MAX_MATCH, MAX_MATCH - n),
            true,
        );
        c.data(
            &format!("boundary-{name}-truncated-at-eof"),
            elf_data(
                MAX_MATCH,
                &[(EARLY, other), (MAX_MATCH - (n - 1), &s[..n - 1])],
            ),
            false,
        );
        c.data(
            &format!("boundary-{name}-last-byte-off-at-end"),
            elf_data(
                MAX_MATCH,
                &[(EARLY, other), (MAX_MATCH - n, &flipped(s, n - 1, 1))],
            ),
            false,
        );
        c.data(
            &format!("boundary-{name}-absent"),
            elf_data(MAX_MATCH, &[(EARLY, other)]),
            false,
        );
    }
    c.data(
        "boundary-s1-straddles-s2-after-256",
        elf_data(MAX_MATCH, &[(245, s1), (259, s2)]),
        true,
    );

    // Not ELF, yet carrying both strings.
    let script = [&b"#!/bin/sh\n# "[..], s1, b"\n# ", s2, b"\nexit 0\n"].concat();
    c.data("nonelf-shell-script", script, false);
    let mut random = layout(rng.bytes(200), &[(50, s1), (120, s2)]);
    random[0] |= 0x80; // never 0x7F
    c.data("nonelf-random-bytes", random, false);
    let text = [
        &b"ELF notes: the section names are "[..],
        s1,
        b" and the code is ",
        s2,
        b".\n",
    ];
    c.data("nonelf-text", text.concat(), false);

    // Tiny ELFs that really run, both classes.
    for arch in [Arch::X86_64, Arch::I386] {
        c.run("plain", arch, vec![], None, false);
        for (order, trailer) in [("s1s2", [s1, s2].concat()), ("s2s1", [s2, s1].concat())] {
            c.run(order, arch, trailer.clone(), None, true);
            for len in [HEAD, HEAD + 1, MAX_MATCH] {
                c.run(order, arch, trailer.clone(), Some(len), true);
            }
            c.run(order, arch, trailer.clone(), Some(270), false);
        }
        // Filler after the trailer's strings puts the last one across 256.
        let s1_across = [s2, s1, &[0; 5]].concat(); // $s1 at 250..264
        let s2_across = [s1, s2, &[0; 8]].concat(); // $s2 at 251..261
        c.run("s1-straddles-256", arch, s1_across, Some(MAX_MATCH), true);
        c.run("s2-straddles-256", arch, s2_across, Some(MAX_MATCH), true);
        // Near-twins of the 269-byte match, decided by the last byte or a missing string.
        let twin = |a: &[u8], b: &[u8]| [a, b].concat();
        let s1_off = flipped(s1, s1.len() - 1, 1);
        let s2_off = flipped(s2, s2.len() - 1, 1);
        c.run(
            "s1-last-byte-off",
            arch,
            twin(&s1_off, s2),
            Some(MAX_MATCH),
            false,
        );
        c.run(
            "s2-last-byte-off",
            arch,
            twin(s1, &s2_off),
            Some(MAX_MATCH),
            false,
        );
        c.run("s2-absent", arch, s1.to_vec(), Some(MAX_MATCH), false);
        // `$s2` starting at each offset modulo 8, whole files under 256
        // bytes: the kernel's first look at a header reads it 8 bytes at a
        // time, and its first two bytes may lie in two words.
        for k in 0..8 {
            let trailer = [&[0u8; 8][..k], s1, s2].concat();
            c.run(&format!("s2-word-offset-{k}"), arch, trailer, None, true);
        }
    }

    c.0
}

/// Writes every sample as DIR/<name> (mode 0755 for runnable ones, 0644 otherwise); returns (path, sample).
pub fn write(dir: &Path) -> io::Result<Vec<(PathBuf, Sample)>> {
    corpus()
        .into_iter()
        .map(|s| {
            let path = dir.join(&s.name);
            fs::write(&path, &s.bytes)?;
            let mode = if s.runnable.is_some() { 0o755 } else { 0o644 };
            // Explicit: the umask must not decide whether a sample can run.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            Ok((path, s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, process::Command};

    use super::*;

    /// The rule, restated from `EQGRP_tinyexec.yar` alone: an oracle that shares
    /// no code (and no constants) with the product's matcher.
    fn reference(b: &[u8]) -> bool {
        const RS1: [u8; 14] = [
            0x73, 0x68, 0x73, 0x74, 0x72, 0x74, 0x61, 0x62, 0x00, 0x2E, 0x74, 0x65, 0x78, 0x74,
        ];
        const RS2: [u8; 10] = [0x5A, 0x58, 0x55, 0x52, 0x89, 0xE2, 0x55, 0x50, 0x89, 0xE1];
        b.len() >= 4
            && u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == 0x464c_457f
            && b.len() < 270
            && b.windows(RS1.len()).any(|w| w == RS1)
            && b.windows(RS2.len()).any(|w| w == RS2)
    }

    fn names(c: &[Sample]) -> HashSet<&str> {
        c.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn deterministic() {
        let (a, b) = (corpus(), corpus());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.name, y.name);
            assert!(x.bytes == y.bytes, "{} differs between calls", x.name);
            assert_eq!(x.expect_match, y.expect_match);
            assert_eq!(x.runnable, y.runnable);
        }
    }

    #[test]
    fn names_unique_and_filesystem_safe() {
        let c = corpus();
        assert_eq!(names(&c).len(), c.len(), "duplicate names");
        for s in &c {
            assert!(
                !s.name.is_empty()
                    && s.name.len() < 100
                    && !s.name.starts_with(['-', '.'])
                    && s.name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{:?}",
                s.name
            );
        }
    }

    #[test]
    fn sizes_as_claimed() {
        for s in corpus() {
            let (_, len) = s.name.rsplit_once("-len").expect("-len<N> suffix");
            assert_eq!(len.parse::<usize>().unwrap(), s.bytes.len(), "{}", s.name);
        }
    }

    #[test]
    fn expectations_agree_with_reference() {
        let c = corpus();
        for s in &c {
            assert_eq!(reference(&s.bytes), s.expect_match, "{s:?}");
        }
        let matches = c.iter().filter(|s| s.expect_match).count();
        assert!(
            matches > 20 && c.len() - matches > 20,
            "{matches} of {}",
            c.len()
        );
    }

    /// Every case the corpus promises, by name.
    #[test]
    fn every_category_present() {
        let c = corpus();
        let have = names(&c);
        let mut want: Vec<String> = [
            "tiny-empty-len0",
            "tiny-magic-prefix-len1",
            "tiny-magic-prefix-len2",
            "tiny-magic-prefix-len3",
            "tiny-magic-only-len4",
            "minimal-s2-cut-short-len27",
            "minimal-smallest-match-len28",
            "minimal-s2-before-s1-len28",
            "filesize-both-early-padded-len270",
            "filesize-both-early-padded-len271",
            "filesize-both-at-end-padded-len270",
            "filesize-both-at-end-padded-len271",
            "large-both-early-len4096",
            "large-both-early-len1048576",
            "magic-wrong-7f454c47-len64",
            "magic-swapped-464c457f-len64",
            "magic-shifted-by-one-len64",
            "magic-missing-len64",
            "strings-s1-then-s2-adjacent-len100",
            "strings-s2-then-s1-adjacent-len100",
            "boundary-s1-starts-at-256-len270",
            "boundary-s2-starts-at-256-len266",
            "boundary-s2-starts-at-256-len269",
            "nonelf-random-bytes-len200",
        ]
        .map(String::from)
        .to_vec();
        for len in [255, 256, 257, 268, 269] {
            want.push(format!("filesize-both-early-len{len}"));
            want.push(format!("filesize-both-at-end-len{len}"));
        }
        for s in ["s1", "s2"] {
            for case in [
                "absent",
                "truncated-at-eof",
                "bitflip-byte0",
                "split-by-cc",
                "split-by-repeat",
                "twice",
            ] {
                want.push(format!("strings-{s}-{case}-len100"));
            }
            for case in [
                "ends-at-256-len257",
                "ends-at-256-len269",
                "straddles-256-len269",
            ] {
                want.push(format!("boundary-{s}-{case}"));
            }
            want.push(format!("boundary-{s}-at-end-len269"));
        }
        for arch in ["elf64", "elf32"] {
            for order in ["s1s2", "s2s1"] {
                for len in [256, 257, 269] {
                    want.push(format!("{arch}-run-match-{order}-len{len}"));
                }
                want.push(format!("{arch}-run-nomatch-{order}-len270"));
                let minimal = format!("{arch}-run-match-{order}-len");
                assert!(
                    c.iter()
                        .any(|s| s.name.starts_with(&minimal) && s.bytes.len() < 256),
                    "{minimal}<min>"
                );
            }
            for case in ["s1-straddles-256", "s2-straddles-256"] {
                want.push(format!("{arch}-run-match-{case}-len269"));
            }
            for case in ["s1-last-byte-off", "s2-last-byte-off", "s2-absent"] {
                want.push(format!("{arch}-run-nomatch-{case}-len269"));
            }
        }
        let missing: Vec<_> = want.iter().filter(|w| !have.contains(w.as_str())).collect();
        assert!(missing.is_empty(), "missing samples: {missing:?}");
        for prefix in ["nonelf-shell-script-", "nonelf-text-"] {
            assert!(c.iter().any(|s| s.name.starts_with(prefix)), "{prefix}");
        }
    }

    /// Where the boundary samples put their strings, checked against the bytes.
    #[test]
    fn boundary_offsets() {
        let c = corpus();
        let get = |n: &str| &c.iter().find(|s| s.name == n).expect(n).bytes;
        let pos = |b: &[u8], s: &[u8]| b.windows(s.len()).rposition(|w| w == s).unwrap();
        assert_eq!(
            pos(get("boundary-s1-ends-at-256-len269"), &S1) + S1.len(),
            256
        );
        assert_eq!(pos(get("boundary-s2-starts-at-256-len269"), &S2), 256);
        assert_eq!(pos(get("boundary-s1-straddles-256-len269"), &S1), 250);
        assert_eq!(pos(get("boundary-s1-at-end-len269"), &S1) + S1.len(), 269);
        for arch in ["elf64", "elf32"] {
            let b = get(&format!("{arch}-run-match-s1-straddles-256-len269"));
            assert!((243..256).contains(&pos(b, &S1)));
            let b = get(&format!("{arch}-run-match-s2-straddles-256-len269"));
            assert!((247..256).contains(&pos(b, &S2)));
            let prefix = format!("{arch}-run-match-s2-word-offset-");
            let mut residues: Vec<usize> = c
                .iter()
                .filter(|s| s.name.starts_with(&prefix))
                .map(|s| pos(&s.bytes, &S2) % 8)
                .collect();
            residues.sort_unstable();
            assert_eq!(residues, (0..8).collect::<Vec<_>>(), "{prefix}");
        }
    }

    /// Runnable means: the kernel execs it here and it exits 0; files with a
    /// tail past 256 bytes stay alive for the sensor to read them.
    #[test]
    fn runnable_samples_run() {
        let dir = crate::TempDir::new("corpus-run");
        let written = write(dir.path()).unwrap();
        let runnable: Vec<_> = written
            .iter()
            .filter_map(|(p, s)| s.runnable.map(|a| (p, s, a)))
            .collect();
        assert!(runnable.iter().any(|r| r.2 == Arch::X86_64));
        assert!(runnable.iter().any(|r| r.2 == Arch::I386));
        let started = std::time::Instant::now();
        let children: Vec<_> = runnable
            .iter()
            .map(|(p, s, _)| (s, crate::spawn(&mut Command::new(p))))
            .collect();
        for (s, mut child) in children {
            let status = child.wait().unwrap();
            // A sensor in prevent mode anywhere on this host SIGKILLs the matching ones.
            assert!(
                status.success(),
                "{s:?}: {status} (is a tinyexec sensor preventing on this host?)"
            );
        }
        let sleepers = runnable
            .iter()
            .filter(|(_, s, _)| (257..270).contains(&s.bytes.len()))
            .count();
        assert!(sleepers > 0);
        assert!(started.elapsed() >= std::time::Duration::from_millis(300));
        for (p, s) in &written {
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let want = if s.runnable.is_some() { 0o755 } else { 0o644 };
            assert_eq!(mode, want, "{}", s.name);
            assert!(fs::read(p).unwrap() == s.bytes, "{}", s.name);
        }
    }
}
