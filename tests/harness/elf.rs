//! Generator for tiny, runnable, static ELF executables used as test data.
//!
//! The sensor under test matches the YARA rule `EQGRP_tinyexec` (ELF magic, file size below 270
//! bytes, and two byte strings). Checking binaries like that into the repository would mean
//! shipping "malware-looking" blobs, so tests build them from code instead, deterministically.
//!
//! Layout (no section headers, `e_shoff = e_shnum = 0`):
//!
//! ```text
//! offset 0      ELF header (64 or 52 bytes)
//!               one PT_LOAD program header (56 or 32 bytes), p_offset 0, R+X, filesz = memsz = file length
//! entry point   hand-assembled code, one block per Action, ending in exit_group
//!               (x86_64, i386 or AArch64 machine code, each with its own system-call numbers)
//!               read-only data: NUL-terminated CreateFile paths
//!               0x00 padding (only when total_len asks for it)
//! end of file   trailer (never executed; e.g. the rule strings)
//! ```
//!
//! The whole file is mapped, so the data is addressable at `base + offset`; timespecs are built on
//! the stack, so the segment never needs to be writable.
#![expect(
    clippy::cast_possible_truncation,
    reason = "the ELFs made here are a few hundred bytes: every length and offset fits its u32 or u16 field"
)]

/// The rule's `$s1` and `$s2`, which generated code and data must never hold by chance.
const RULE_S1: &[u8] = &tinyexec_ebpf::rule::S1;
const RULE_S2: &[u8] = &tinyexec_ebpf::rule::S2;

/// Target instruction set / ELF class of the generated executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    I386,
    /// 64-bit Arm (arm64): Linux's generic system-call table, which has no
    /// `open`; `CreateFile` uses `openat(AT_FDCWD, ...)`.
    Aarch64,
}

/// One step of the generated program, executed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// nanosleep for this many milliseconds
    SleepMs(u32),
    /// open(path, `O_WRONLY|O_CREAT|O_TRUNC`, 0644) and close it; the path bytes are embedded NUL-terminated in the file
    CreateFile(Vec<u8>),
    /// `exit_group(code)` — always the implicit last action too (exit 0) if the list doesn't end with Exit
    Exit(u8),
}

/// Description of a tiny executable; `build()` turns it into file bytes.
#[derive(Clone, Debug)]
pub struct TinyElf {
    pub arch: Arch,
    pub actions: Vec<Action>,
    /// Bytes placed in the file after the code and any data, inside the loaded segment, never executed.
    pub trailer: Vec<u8>,
    /// If set, the file is padded (with 0x00 filler placed between the code/data and the trailer, so the trailer
    /// stays at the very end of the file) to exactly this many bytes; `build()` returns an error if it cannot fit.
    pub total_len: Option<usize>,
}

/// `open` flags: `O_WRONLY` | `O_CREAT` | `O_TRUNC` (same values on `x86_64`, i386 and arm64).
const OPEN_FLAGS: u32 = 0o1 | 0o100 | 0o1000;
/// `open` mode 0644.
const OPEN_MODE: u32 = 0o644;

impl Arch {
    /// The machine's own 64-bit architecture (what this code was built for).
    pub const fn native() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// What runs on this machine: the native one first, then i386 on `x86_64`
    /// (its kernels run 32-bit x86 programs; arm64 ones have no i386 at all).
    pub const fn runnable() -> &'static [Arch] {
        if cfg!(target_arch = "aarch64") {
            &[Arch::Aarch64]
        } else {
            &[Arch::X86_64, Arch::I386]
        }
    }

    /// A short name, for test and check names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::I386 => "i386",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Load address of the single segment (the conventional non-PIE bases).
    fn base(self) -> u32 {
        match self {
            Arch::X86_64 | Arch::Aarch64 => 0x0040_0000,
            Arch::I386 => 0x0804_8000,
        }
    }

    /// ELF header + one program header; the entry point sits right after them.
    fn headers_len(self) -> usize {
        match self {
            Arch::X86_64 | Arch::Aarch64 => 64 + 56,
            Arch::I386 => 52 + 32,
        }
    }

    /// `e_machine`.
    fn machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,   // EM_X86_64
            Arch::I386 => 3,      // EM_386
            Arch::Aarch64 => 183, // EM_AARCH64
        }
    }
}

/// Appends a little-endian imm32 to the instruction stream.
fn imm32(code: &mut Vec<u8>, v: u32) {
    code.extend_from_slice(&v.to_le_bytes());
}

/// Emits the syscall instruction of the arch (`syscall` / `int 0x80` / `svc #0`).
fn sys(code: &mut Vec<u8>, arch: Arch) {
    match arch {
        Arch::X86_64 => code.extend_from_slice(&[0x0F, 0x05]), // syscall
        Arch::I386 => code.extend_from_slice(&[0xCD, 0x80]),   // int 0x80
        Arch::Aarch64 => a64::insn(code, a64::SVC0),
    }
}

/// AArch64 encodings: every instruction is one little-endian 32-bit word, so
/// sizes never depend on the values (a 32-bit value always takes `movz` + `movk`).
mod a64 {
    /// `svc #0`.
    pub const SVC0: u32 = 0xD400_0001;
    /// `sub sp, sp, #16`.
    pub const SUB_SP_16: u32 = 0xD100_43FF;
    /// `stp x9, x10, [sp]`.
    pub const STP_X9_X10_SP: u32 = 0xA900_2BE9;
    /// `mov x0, sp` (`add x0, sp, #0`).
    pub const MOV_X0_SP: u32 = 0x9100_03E0;
    /// `mov x0, #-100` (`movn x0, #99`): `AT_FDCWD`.
    pub const MOV_X0_AT_FDCWD: u32 = 0x9280_0C60;

    pub fn insn(code: &mut Vec<u8>, word: u32) {
        code.extend_from_slice(&word.to_le_bytes());
    }

    /// `movz xRD, #imm16`: the register is `imm16`, its upper bits cleared.
    pub fn movz(code: &mut Vec<u8>, rd: u32, imm16: u16) {
        insn(code, 0xD280_0000 | (u32::from(imm16) << 5) | rd);
    }

    /// `movz xRD, #lo` then `movk xRD, #hi, lsl #16`: any 32-bit value, zero-extended.
    pub fn mov32(code: &mut Vec<u8>, rd: u32, v: u32) {
        movz(code, rd, v as u16);
        insn(code, 0xF2A0_0000 | ((v >> 16) << 5) | rd);
    }

    /// System-call numbers of Linux's generic table (include/uapi/asm-generic/unistd.h).
    pub const NR_OPENAT: u16 = 56;
    pub const NR_CLOSE: u16 = 57;
    pub const NR_EXIT_GROUP: u16 = 94;
    pub const NR_NANOSLEEP: u16 = 101;
    /// The register that carries the system-call number.
    pub const X8: u32 = 8;
}

/// Emits `mov eax, nr` (zero-extends to rax on `x86_64`).
fn mov_eax(code: &mut Vec<u8>, nr: u32) {
    code.push(0xB8); // mov eax, imm32
    imm32(code, nr);
}

/// Emits `exit_group(status)`.
fn emit_exit(code: &mut Vec<u8>, arch: Arch, status: u8) {
    if arch == Arch::Aarch64 {
        a64::movz(code, 0, u16::from(status));
        a64::movz(code, a64::X8, a64::NR_EXIT_GROUP);
        sys(code, arch);
        return;
    }
    match (arch, status) {
        (Arch::X86_64, 0) => code.extend_from_slice(&[0x31, 0xFF]), // xor edi, edi
        (Arch::X86_64, s) => {
            code.push(0xBF); // mov edi, imm32
            imm32(code, u32::from(s));
        }
        (Arch::I386, 0) => code.extend_from_slice(&[0x31, 0xDB]), // xor ebx, ebx
        (_, s) => {
            code.push(0xBB); // mov ebx, imm32
            imm32(code, u32::from(s));
        }
    }
    mov_eax(code, if arch == Arch::X86_64 { 231 } else { 252 }); // __NR_exit_group
    sys(code, arch);
}

/// Emits `nanosleep(&{ms/1000, (ms%1000)*1e6}, NULL)` with the timespec pushed on the stack, so
/// the code stays position independent and the segment read-only. Both fields are < 2^31, so
/// the sign-extending `push imm32` yields the right 64-bit values too. The 16/8 stack bytes are
/// deliberately not popped: nothing else uses the stack.
fn emit_sleep(code: &mut Vec<u8>, arch: Arch, ms: u32) {
    let sec = ms / 1000;
    let nsec = (ms % 1000) * 1_000_000;
    if arch == Arch::Aarch64 {
        // The timespec {x9, x10} stored at a fresh 16-byte slot of the stack
        // (sp stays 16-byte aligned, as AArch64 requires).
        a64::mov32(code, 9, sec);
        a64::mov32(code, 10, nsec);
        a64::insn(code, a64::SUB_SP_16);
        a64::insn(code, a64::STP_X9_X10_SP);
        a64::insn(code, a64::MOV_X0_SP); // req
        a64::movz(code, 1, 0); // rem = NULL
        a64::movz(code, a64::X8, a64::NR_NANOSLEEP);
        sys(code, arch);
        return;
    }
    code.push(0x68); // push imm32: tv_nsec
    imm32(code, nsec);
    code.push(0x68); // push imm32: tv_sec (now at [sp])
    imm32(code, sec);
    if arch == Arch::X86_64 {
        code.extend_from_slice(&[0x48, 0x89, 0xE7]); // mov rdi, rsp   (req)
        code.extend_from_slice(&[0x31, 0xF6]); // xor esi, esi         (rem = NULL)
        mov_eax(code, 35); // __NR_nanosleep
    } else {
        code.extend_from_slice(&[0x89, 0xE3]); // mov ebx, esp    (req)
        code.extend_from_slice(&[0x31, 0xC9]); // xor ecx, ecx    (rem = NULL)
        mov_eax(code, 162); // __NR_nanosleep
    }
    sys(code, arch);
}

/// Emits `close(open(path_addr, O_WRONLY|O_CREAT|O_TRUNC, 0644))`. A failed open just makes
/// close fail with EBADF; the program carries on either way.
fn emit_create(code: &mut Vec<u8>, arch: Arch, path_addr: u32) {
    match arch {
        Arch::X86_64 => {
            code.push(0xBF); // mov edi, imm32   (path; zero-extended to rdi)
            imm32(code, path_addr);
            code.push(0xBE); // mov esi, imm32   (flags)
            imm32(code, OPEN_FLAGS);
            code.push(0xBA); // mov edx, imm32   (mode)
            imm32(code, OPEN_MODE);
            mov_eax(code, 2); // __NR_open
            sys(code, arch);
            code.extend_from_slice(&[0x89, 0xC7]); // mov edi, eax   (fd)
            mov_eax(code, 3); // __NR_close
            sys(code, arch);
        }
        Arch::I386 => {
            code.push(0xBB); // mov ebx, imm32   (path)
            imm32(code, path_addr);
            code.push(0xB9); // mov ecx, imm32   (flags)
            imm32(code, OPEN_FLAGS);
            code.push(0xBA); // mov edx, imm32   (mode)
            imm32(code, OPEN_MODE);
            mov_eax(code, 5); // __NR_open
            sys(code, arch);
            code.extend_from_slice(&[0x89, 0xC3]); // mov ebx, eax   (fd)
            mov_eax(code, 6); // __NR_close
            sys(code, arch);
        }
        Arch::Aarch64 => {
            // No `open` on arm64: openat(AT_FDCWD, path, flags, mode).
            a64::insn(code, a64::MOV_X0_AT_FDCWD);
            a64::mov32(code, 1, path_addr);
            a64::mov32(code, 2, OPEN_FLAGS);
            a64::mov32(code, 3, OPEN_MODE);
            a64::movz(code, a64::X8, a64::NR_OPENAT);
            sys(code, arch);
            // The fd (or -errno) is already in x0.
            a64::movz(code, a64::X8, a64::NR_CLOSE);
            sys(code, arch);
        }
    }
}

/// Finds `needle` anywhere in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl TinyElf {
    pub fn new(arch: Arch) -> Self {
        TinyElf {
            arch,
            actions: Vec::new(),
            trailer: Vec::new(),
            total_len: None,
        }
    }

    /// Assembles code and data given the virtual address where the data will start.
    /// Instruction sizes never depend on addresses, so a first pass with a dummy
    /// address yields the code length needed to compute the real one.
    fn assemble(&self, data_vaddr: u32) -> (Vec<u8>, Vec<u8>) {
        let arch = self.arch;
        let mut code = Vec::new();
        let mut data = Vec::new();
        for action in &self.actions {
            match action {
                Action::SleepMs(ms) => emit_sleep(&mut code, arch, *ms),
                Action::CreateFile(path) => {
                    // Offsets are validated in build(); wrapping only matters for min_len()'s
                    // unvalidated sizing pass, where the address value is irrelevant.
                    let addr = data_vaddr.wrapping_add(data.len() as u32);
                    data.extend_from_slice(path);
                    data.push(0);
                    emit_create(&mut code, arch, addr);
                }
                Action::Exit(status) => emit_exit(&mut code, arch, *status),
            }
        }
        if !matches!(self.actions.last(), Some(Action::Exit(_))) {
            emit_exit(&mut code, arch, 0);
        }
        (code, data)
    }

    /// Length of headers + code + data (everything before padding and trailer).
    fn body_len(&self) -> usize {
        let (code, data) = self.assemble(0);
        self.arch.headers_len() + code.len() + data.len()
    }

    /// The complete file. Deterministic: same input, same bytes.
    pub fn build(&self) -> Result<Vec<u8>, String> {
        let arch = self.arch;
        for action in &self.actions {
            if let Action::CreateFile(path) = action {
                if path.is_empty() {
                    return Err("CreateFile: empty path".into());
                }
                if path.contains(&0) {
                    return Err(format!("CreateFile: path {path:?} contains a NUL byte"));
                }
            }
        }

        let body_len = self.body_len();
        let min = body_len + self.trailer.len();
        let total = self.total_len.unwrap_or(min);
        if total < min {
            return Err(format!(
                "total_len {total} is smaller than the minimum {min} for this program"
            ));
        }
        // 32-bit fields (and the 32-bit address space) bound the file size for both classes.
        let too_big = || format!("file of {total} bytes does not fit the address space");
        let total32 = u32::try_from(total).map_err(|_| too_big())?;
        arch.base().checked_add(total32).ok_or_else(too_big)?;

        let hdr = arch.headers_len();
        let code_len = self.assemble(0).0.len();
        // Fits: hdr + code_len <= total, and base + total was checked above.
        let data_vaddr = arch.base() + (hdr + code_len) as u32;
        let (code, data) = self.assemble(data_vaddr);
        let entry = arch.base() + hdr as u32;

        let mut out = Vec::with_capacity(total);
        match arch {
            Arch::X86_64 | Arch::Aarch64 => headers64(&mut out, arch, entry, total32),
            Arch::I386 => headers32(&mut out, entry, total32),
        }
        debug_assert_eq!(out.len(), hdr);
        out.extend_from_slice(&code);
        out.extend_from_slice(&data);
        out.resize(total - self.trailer.len(), 0);

        // Detection must be driven by the trailer alone; a path could otherwise smuggle in a
        // rule string (e.g. "..shstrtab" followed by ".text.." in the data area).
        for (name, s) in [("$s1", RULE_S1), ("$s2", RULE_S2)] {
            if contains(&out, s) {
                return Err(format!(
                    "rule string {name} appears outside the trailer (in a CreateFile path?)"
                ));
            }
        }

        out.extend_from_slice(&self.trailer);
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }

    /// The smallest size `build()` can produce for this program (without `total_len` padding).
    pub fn min_len(&self) -> usize {
        self.body_len() + self.trailer.len()
    }
}

/// `e_ident`: magic, class, little-endian, version 1, SysV ABI, zero padding.
fn ident(out: &mut Vec<u8>, class: u8) {
    out.extend_from_slice(&[0x7F, b'E', b'L', b'F', class, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
}

fn u16le(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn u32le(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn u64le(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

const ET_EXEC: u16 = 2;
const PT_LOAD: u32 = 1;
const PF_R_X: u32 = 0x4 | 0x1;
const PAGE: u32 = 0x1000;

/// `Elf64_Ehdr` + `Elf64_Phdr` for `x86_64` or arm64, mapping the whole file at the base address.
fn headers64(out: &mut Vec<u8>, arch: Arch, entry: u32, filesz: u32) {
    let base = u64::from(arch.base());
    ident(out, 2); // ELFCLASS64
    u16le(out, ET_EXEC); // e_type
    u16le(out, arch.machine()); // e_machine
    u32le(out, 1); // e_version
    u64le(out, u64::from(entry)); // e_entry
    u64le(out, 64); // e_phoff
    u64le(out, 0); // e_shoff: no section headers
    u32le(out, 0); // e_flags
    u16le(out, 64); // e_ehsize
    u16le(out, 56); // e_phentsize
    u16le(out, 1); // e_phnum
    u16le(out, 0); // e_shentsize
    u16le(out, 0); // e_shnum
    u16le(out, 0); // e_shstrndx
    u32le(out, PT_LOAD); // p_type
    u32le(out, PF_R_X); // p_flags
    u64le(out, 0); // p_offset
    u64le(out, base); // p_vaddr
    u64le(out, base); // p_paddr
    u64le(out, u64::from(filesz)); // p_filesz
    u64le(out, u64::from(filesz)); // p_memsz
    u64le(out, u64::from(PAGE)); // p_align
}

/// `Elf32_Ehdr` + `Elf32_Phdr` for i386, mapping the whole file at the base address.
fn headers32(out: &mut Vec<u8>, entry: u32, filesz: u32) {
    let base = Arch::I386.base();
    ident(out, 1); // ELFCLASS32
    u16le(out, ET_EXEC); // e_type
    u16le(out, Arch::I386.machine()); // e_machine
    u32le(out, 1); // e_version
    u32le(out, entry); // e_entry
    u32le(out, 52); // e_phoff
    u32le(out, 0); // e_shoff: no section headers
    u32le(out, 0); // e_flags
    u16le(out, 52); // e_ehsize
    u16le(out, 32); // e_phentsize
    u16le(out, 1); // e_phnum
    u16le(out, 0); // e_shentsize
    u16le(out, 0); // e_shnum
    u16le(out, 0); // e_shstrndx
    u32le(out, PT_LOAD); // p_type
    u32le(out, 0); // p_offset
    u32le(out, base); // p_vaddr
    u32le(out, base); // p_paddr
    u32le(out, filesz); // p_filesz
    u32le(out, filesz); // p_memsz
    u32le(out, PF_R_X); // p_flags
    u32le(out, PAGE); // p_align
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCHES: [Arch; 3] = [Arch::X86_64, Arch::I386, Arch::Aarch64];

    fn both_strings() -> Vec<u8> {
        [RULE_S1, RULE_S2].concat()
    }

    fn elf(arch: Arch, actions: Vec<Action>) -> TinyElf {
        TinyElf {
            actions,
            ..TinyElf::new(arch)
        }
    }

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// A spread of programs used by the structural tests.
    fn variants() -> Vec<TinyElf> {
        let mut v = Vec::new();
        for arch in ARCHES {
            v.push(TinyElf::new(arch));
            for code in [0u8, 1, 7, 0x5A, 0x89, 0xE1, 0xE2, 0xFF] {
                v.push(elf(arch, vec![Action::Exit(code)]));
            }
            for ms in [
                0u32,
                1,
                300,
                999,
                1000,
                0x5A58_5552,
                0x89E2_5550,
                0x5550_89E1,
                u32::MAX,
            ] {
                v.push(elf(arch, vec![Action::SleepMs(ms)]));
            }
            for path in [&b"/tmp/m"[..], b"shstrtab", b".text", b"ZXUR\x89\xe2UP\x89"] {
                v.push(elf(
                    arch,
                    vec![
                        Action::CreateFile(path.to_vec()),
                        Action::SleepMs(5),
                        Action::Exit(3),
                    ],
                ));
            }
        }
        v
    }

    #[test]
    fn deterministic() {
        for t in variants() {
            assert_eq!(t.build().unwrap(), t.build().unwrap());
            assert_eq!(t.clone().build().unwrap(), t.build().unwrap());
        }
    }

    #[test]
    fn header_fields() {
        for t in variants() {
            let b = t.build().unwrap();
            assert_eq!(&b[..4], b"\x7fELF");
            assert_eq!(u32_at(&b, 0), 0x464c_457f, "YARA uint32(0)");
            assert_eq!(b[5], 1, "little endian");
            assert_eq!(u16_at(&b, 16), 2, "ET_EXEC");
            match t.arch {
                Arch::X86_64 | Arch::Aarch64 => {
                    assert_eq!(b[4], 2);
                    let machine = if t.arch == Arch::X86_64 { 62 } else { 183 };
                    assert_eq!(u16_at(&b, 18), machine);
                    assert_eq!(u64_at(&b, 24), 0x40_0000 + 120, "entry after phdr");
                    assert_eq!(u64_at(&b, 32), 64, "e_phoff");
                    assert_eq!(u64_at(&b, 40), 0, "e_shoff");
                    assert_eq!(u16_at(&b, 54), 56, "e_phentsize");
                    assert_eq!(u16_at(&b, 56), 1, "e_phnum");
                    assert_eq!(u16_at(&b, 60), 0, "e_shnum");
                    let ph = 64;
                    assert_eq!(u32_at(&b, ph), PT_LOAD);
                    assert_eq!(u32_at(&b, ph + 4), 5, "R+X");
                    assert_eq!(u64_at(&b, ph + 8), 0, "p_offset");
                    assert_eq!(u64_at(&b, ph + 16), 0x40_0000);
                    assert_eq!(u64_at(&b, ph + 32), b.len() as u64, "p_filesz");
                    assert_eq!(u64_at(&b, ph + 40), b.len() as u64, "p_memsz");
                }
                Arch::I386 => {
                    assert_eq!(b[4], 1);
                    assert_eq!(u16_at(&b, 18), 3);
                    assert_eq!(u32_at(&b, 24), 0x0804_8000 + 84, "entry after phdr");
                    assert_eq!(u32_at(&b, 28), 52, "e_phoff");
                    assert_eq!(u32_at(&b, 32), 0, "e_shoff");
                    assert_eq!(u16_at(&b, 42), 32, "e_phentsize");
                    assert_eq!(u16_at(&b, 44), 1, "e_phnum");
                    assert_eq!(u16_at(&b, 48), 0, "e_shnum");
                    let ph = 52;
                    assert_eq!(u32_at(&b, ph), PT_LOAD);
                    assert_eq!(u32_at(&b, ph + 4), 0, "p_offset");
                    assert_eq!(u32_at(&b, ph + 8), 0x0804_8000);
                    assert_eq!(u32_at(&b, ph + 16), b.len() as u32, "p_filesz");
                    assert_eq!(u32_at(&b, ph + 20), b.len() as u32, "p_memsz");
                    assert_eq!(u32_at(&b, ph + 24), 5, "R+X");
                }
            }
        }
    }

    #[test]
    fn generated_bytes_never_contain_rule_strings() {
        let mut n = 0;
        for t in variants() {
            let b = t.build().unwrap();
            assert!(!contains(&b, RULE_S1), "$s1 in {t:?}");
            assert!(!contains(&b, RULE_S2), "$s2 in {t:?}");
            n += 1;
        }
        // Every exit code and a sweep of sleep values on both arches.
        for arch in ARCHES {
            for code in 0..=255u8 {
                let b = elf(
                    arch,
                    vec![Action::SleepMs(u32::from(code) * 7919), Action::Exit(code)],
                )
                .build()
                .unwrap();
                assert!(!contains(&b, RULE_S1) && !contains(&b, RULE_S2));
                n += 1;
            }
        }
        assert!(n > 500);
    }

    #[test]
    fn rule_string_smuggled_through_paths_is_rejected() {
        for arch in ARCHES {
            let t = elf(
                arch,
                vec![
                    Action::CreateFile(b"/tmp/shstrtab".to_vec()),
                    Action::CreateFile(b".text".to_vec()),
                ],
            );
            assert!(t.build().unwrap_err().contains("$s1"));
        }
    }

    #[test]
    fn bad_paths_are_rejected() {
        for arch in ARCHES {
            assert!(elf(arch, vec![Action::CreateFile(vec![])]).build().is_err());
            assert!(
                elf(arch, vec![Action::CreateFile(b"a\0b".to_vec())])
                    .build()
                    .is_err()
            );
        }
    }

    #[test]
    fn min_len_values() {
        let x64 = TinyElf::new(Arch::X86_64);
        let x32 = TinyElf::new(Arch::I386);
        let a64 = TinyElf::new(Arch::Aarch64);
        let x64s = TinyElf {
            trailer: both_strings(),
            ..x64.clone()
        };
        let x32s = TinyElf {
            trailer: both_strings(),
            ..x32.clone()
        };
        println!(
            "min_len: x86_64 exit0 = {}, i386 exit0 = {}, x86_64 + both strings = {}, i386 + both strings = {}",
            x64.min_len(),
            x32.min_len(),
            x64s.min_len(),
            x32s.min_len()
        );
        assert_eq!(x64.min_len(), 120 + 9);
        assert_eq!(x32.min_len(), 84 + 9);
        assert_eq!(x64s.min_len(), 129 + 24);
        assert_eq!(x32s.min_len(), 93 + 24);
        // movz x0, movz x8, svc.
        assert_eq!(a64.min_len(), 120 + 12);
        for t in variants() {
            assert_eq!(t.min_len(), t.build().unwrap().len());
        }
    }

    /// The AArch64 encodings, checked against GNU objdump's disassembly of them
    /// (`aarch64-linux-gnu-objdump -D -b binary -m aarch64`).
    #[test]
    fn aarch64_code_is_what_objdump_reads() {
        let words = |actions: Vec<Action>| -> Vec<u32> {
            let b = elf(Arch::Aarch64, actions).build().unwrap();
            b[120..]
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                .collect()
        };
        // mov x0, #0; mov x8, #94; svc #0 (the sensor's canary has the same words).
        assert_eq!(words(vec![]), [0xD280_0000, 0xD280_0BC8, 0xD400_0001]);
        assert_eq!(
            words(vec![Action::SleepMs(1500), Action::Exit(7)]),
            [
                0xD280_0029, // mov x9, #1
                0xF2A0_0009, // movk x9, #0, lsl #16
                0xD28C_A00A, // mov x10, #0x6500
                0xF2A3_B9AA, // movk x10, #0x1dcd, lsl #16 (500,000,000 ns)
                0xD100_43FF, // sub sp, sp, #16
                0xA900_2BE9, // stp x9, x10, [sp]
                0x9100_03E0, // mov x0, sp
                0xD280_0001, // mov x1, #0
                0xD280_0CA8, // mov x8, #101 (nanosleep)
                0xD400_0001, // svc #0
                0xD280_00E0, // mov x0, #7
                0xD280_0BC8, // mov x8, #94 (exit_group)
                0xD400_0001, // svc #0
            ]
        );
        let create = words(vec![Action::CreateFile(b"/tmp/x".to_vec())]);
        assert_eq!(
            create[..10],
            [
                0x9280_0C60, // mov x0, #-100 (AT_FDCWD)
                0xD280_1601, // mov x1, #0xb0: the path, after 56 bytes of code
                0xF2A0_0801, // movk x1, #0x40, lsl #16 (0x4000b0)
                0xD280_4822, // mov x2, #0x241 (O_WRONLY|O_CREAT|O_TRUNC)
                0xF2A0_0002, // movk x2, #0, lsl #16
                0xD280_3483, // mov x3, #0x1a4 (0644)
                0xF2A0_0003, // movk x3, #0, lsl #16
                0xD280_0708, // mov x8, #56 (openat)
                0xD400_0001, // svc #0
                0xD280_0728, // mov x8, #57 (close)
            ]
        );
    }

    #[test]
    fn padding_keeps_trailer_at_end() {
        for arch in ARCHES {
            for total in [269usize, 270, 4096] {
                let t = TinyElf {
                    trailer: both_strings(),
                    total_len: Some(total),
                    ..TinyElf::new(arch)
                };
                let b = t.build().unwrap();
                assert_eq!(b.len(), total);
                assert!(b.ends_with(&both_strings()));
                let pad = &b[t.min_len() - 24..total - 24];
                assert!(pad.iter().all(|&x| x == 0));
                // Exactly one occurrence of each string: the trailer's.
                assert_eq!(
                    b.windows(RULE_S1.len()).filter(|w| *w == RULE_S1).count(),
                    1
                );
                assert_eq!(
                    b.windows(RULE_S2.len()).filter(|w| *w == RULE_S2).count(),
                    1
                );
            }
            let exact = TinyElf {
                trailer: both_strings(),
                ..TinyElf::new(arch)
            };
            let min = exact.min_len();
            let at_min = TinyElf {
                total_len: Some(min),
                ..exact.clone()
            };
            assert_eq!(at_min.build().unwrap(), exact.build().unwrap());
        }
    }

    #[test]
    fn too_small_total_len_errors() {
        for arch in ARCHES {
            let t = TinyElf {
                trailer: both_strings(),
                ..TinyElf::new(arch)
            };
            let min = t.min_len();
            for total in [0, 4, min - 1] {
                let small = TinyElf {
                    total_len: Some(total),
                    ..t.clone()
                };
                assert!(small.build().is_err(), "{total}");
            }
        }
        let huge = TinyElf {
            total_len: Some(usize::MAX),
            ..TinyElf::new(Arch::I386)
        };
        assert!(huge.build().is_err());
    }

    /// Tests that exec the generated files on the running kernel, for every
    /// arch it runs ([`Arch::runnable`]).
    #[cfg(target_os = "linux")]
    mod run {
        use super::*;
        use std::fs::OpenOptions;
        use std::io::{ErrorKind, Write};
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::process::ExitStatusExt;
        use std::path::PathBuf;
        use std::process::{Command, ExitStatus};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{Duration, Instant};

        const ENOEXEC: i32 = 8;
        const ETXTBSY: i32 = 26;

        fn temp_path(tag: &str) -> PathBuf {
            static N: AtomicUsize = AtomicUsize::new(0);
            std::env::temp_dir().join(format!(
                "tinyelf-{}-{}-{tag}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ))
        }

        /// Writes the file 0755, execs it, removes it; returns status and wall time.
        fn run(t: &TinyElf) -> (ExitStatus, Duration) {
            let bytes = t.build().unwrap();
            let path = temp_path("exe");
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o755)
                .open(&path)
                .unwrap();
            f.write_all(&bytes).unwrap();
            drop(f);
            let mut tries = 0;
            let result = loop {
                let start = Instant::now();
                match Command::new(&path).status() {
                    // Another test thread forking while our write fd was open leaves a copy of it
                    // in that child until its exec; wait it out instead of failing spuriously.
                    Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 100 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    other => break other.map(|s| (s, start.elapsed())),
                }
            };
            let _ = std::fs::remove_file(&path);
            match result {
                Ok(r) => r,
                Err(e) if e.raw_os_error() == Some(ENOEXEC) && t.arch == Arch::I386 => panic!(
                    "exec of a 32-bit i386 ELF failed with ENOEXEC: this kernel has no IA32 \
                     emulation (CONFIG_IA32_EMULATION off, or booted with ia32_emulation=0); \
                     the 32-bit tests cannot run here"
                ),
                Err(e) if e.kind() == ErrorKind::NotFound => panic!("exec {path:?}: {e}"),
                Err(e) => panic!("exec {:?} ({:?}): {e}", path, t.arch),
            }
        }

        fn assert_code(t: &TinyElf, want: i32) -> Duration {
            let (status, took) = run(t);
            assert_eq!(
                status.code(),
                Some(want),
                "{t:?}: status {status:?} (signal {:?})",
                status.signal()
            );
            took
        }

        const ARCHES: &[Arch] = Arch::runnable();

        #[test]
        fn exit_codes() {
            for &arch in ARCHES {
                assert_code(&TinyElf::new(arch), 0);
                assert_code(&elf(arch, vec![Action::Exit(0)]), 0);
                assert_code(&elf(arch, vec![Action::Exit(7)]), 7);
                assert_code(&elf(arch, vec![Action::Exit(255)]), 255);
                // Code after the first exit never runs.
                assert_code(&elf(arch, vec![Action::Exit(9), Action::Exit(1)]), 9);
            }
        }

        #[test]
        fn sleep_takes_at_least_the_time() {
            for &arch in ARCHES {
                let took = assert_code(&elf(arch, vec![Action::SleepMs(300)]), 0);
                assert!(took >= Duration::from_millis(300), "{arch:?}: {took:?}");
                assert!(took < Duration::from_secs(5), "{arch:?}: {took:?}");
                let took = assert_code(&elf(arch, vec![Action::SleepMs(1250), Action::Exit(4)]), 4);
                assert!(took >= Duration::from_millis(1250), "{arch:?}: {took:?}");
            }
        }

        #[test]
        fn create_file_creates_it() {
            for &arch in ARCHES {
                let a = temp_path("marker-a");
                let b = temp_path("marker-b");
                let t = elf(
                    arch,
                    vec![
                        Action::CreateFile(a.as_os_str().as_encoded_bytes().to_vec()),
                        Action::SleepMs(10),
                        Action::CreateFile(b.as_os_str().as_encoded_bytes().to_vec()),
                        Action::Exit(5),
                    ],
                );
                assert!(!a.exists() && !b.exists());
                assert_code(&t, 5);
                for m in [&a, &b] {
                    let meta = std::fs::metadata(m)
                        .unwrap_or_else(|e| panic!("{arch:?}: marker {m:?} missing: {e}"));
                    assert_eq!(meta.len(), 0);
                    let _ = std::fs::remove_file(m);
                }
            }
        }

        #[test]
        fn padded_variants_with_rule_strings_run() {
            for &arch in ARCHES {
                for total in [269, 270] {
                    let t = TinyElf {
                        actions: vec![Action::SleepMs(20)],
                        trailer: both_strings(),
                        total_len: Some(total),
                        ..TinyElf::new(arch)
                    };
                    assert_eq!(t.build().unwrap().len(), total);
                    assert_code(&t, 0);
                    let t = TinyElf {
                        actions: vec![],
                        ..t
                    };
                    assert_code(&t, 0);
                }
            }
        }
    }
}
