//! The self-test's canary: the smallest static ELF that exits 0, for the
//! architecture the sensor runs on, followed by `$s2`'s first two bytes.
//! The kernel's filter lets a candidate through only when its header may
//! hold `$s2` (`rule::ruled_out`): with the pair, the canary passes the
//! filter as a rule candidate, without the self-test's switch (see the
//! entry, `stages/exec.rs`), and the rule still does not match it.
//!
//! Built here rather than taken from the tests' generator (`tests/harness/elf.rs`,
//! which assembles whole test programs): the sensor needs only this one,
//! and it must not depend on test code.

use tinyexec_ebpf::rule;

/// Where the single segment is loaded (the conventional non-PIE base).
const BASE: u64 = 0x40_0000;
/// The sizes of the ELF and program headers (their own u16 fields).
const EHDR_LEN: u16 = 64;
const PHDR_LEN: u16 = 56;

/// `exit_group(0)` in machine code, and the ELF machine number.
#[cfg(target_arch = "x86_64")]
const EXIT0: (&[u8], u16) = (
    &[
        0x31, 0xff, // xor edi, edi
        0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231 (exit_group)
        0x0f, 0x05, // syscall
    ],
    62, // EM_X86_64
);
#[cfg(target_arch = "aarch64")]
const EXIT0: (&[u8], u16) = (
    &[
        0x00, 0x00, 0x80, 0xd2, // mov x0, #0
        0xc8, 0x0b, 0x80, 0xd2, // mov x8, #94 (exit_group)
        0x01, 0x00, 0x00, 0xd4, // svc #0
    ],
    183, // EM_AARCH64
);

/// Never run: the code exits before it.
const S2_PAIR: [u8; 2] = [rule::S2[0], rule::S2[1]];

/// The canary's bytes: ELF header, one R+X `PT_LOAD` of the whole file,
/// code, [`S2_PAIR`].
pub fn exit0_elf() -> Vec<u8> {
    let (code, machine) = EXIT0;
    let headers = usize::from(EHDR_LEN + PHDR_LEN);
    let entry = BASE + u64::from(EHDR_LEN + PHDR_LEN);
    let total = headers + code.len() + S2_PAIR.len();
    let len = total as u64;
    let mut f = Vec::with_capacity(total);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&machine.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&u64::from(EHDR_LEN).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&EHDR_LEN.to_le_bytes());
    f.extend_from_slice(&PHDR_LEN.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R+X
    f.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    f.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    f.extend_from_slice(&len.to_le_bytes()); // p_filesz
    f.extend_from_slice(&len.to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    f.extend_from_slice(code);
    f.extend_from_slice(&S2_PAIR);
    f
}

#[cfg(test)]
mod tests {
    use tinyexec_ebpf::rule;

    #[test]
    fn is_a_candidate_the_filter_passes_and_the_rule_does_not_match() {
        let f = super::exit0_elf();
        assert_eq!(
            f.len(),
            usize::from(super::EHDR_LEN + super::PHDR_LEN)
                + super::EXIT0.0.len()
                + super::S2_PAIR.len()
        );
        assert!(f.starts_with(&rule::MAGIC));
        assert!(rule::size_can_match(f.len() as u64));
        let (header, seen) = rule::header_of(&f);
        let size = f.len() as u64;
        assert!(!rule::ruled_out(|j| rule::word(&header, j), seen, size));
        assert_eq!(
            rule::header_verdict(&header, seen, size),
            rule::HeaderVerdict::NoMatch
        );
        assert!(rule::evaluate(&f).is_none());
    }
}
