//! The architectures the sensor ships for, and what each one's build, package
//! and VM need: one place for the names Rust and Debian give them. Builds are
//! made on `x86_64` (arm64 with Debian's cross compiler).

use std::fmt;

use crate::cmd::Probe;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// 64-bit x86 (Debian's amd64).
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    /// 64-bit Arm (Debian's arm64).
    #[value(name = "aarch64", alias = "arm64")]
    Aarch64,
}

pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

impl Arch {
    /// The machine xtask runs on.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// Rust's static target: musl's C library linked in (.cargo/config.toml
    /// names the C compiler and linker of each).
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's name: package `Architecture:`, `APT::Architecture`.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// ELF `e_machine`.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => object::elf::EM_X86_64,
            Arch::Aarch64 => object::elf::EM_AARCH64,
        }
    }

    /// The binutils objcopy that reads this architecture's ELF files (on an
    /// `x86_64` build machine, the one the builds are made on).
    pub fn objcopy(self) -> &'static str {
        match self {
            Arch::X86_64 => "objcopy",
            Arch::Aarch64 => "aarch64-linux-gnu-objcopy",
        }
    }

    /// Debian packages the static build needs, as (how to tell it is there, package).
    pub fn build_packages(self) -> &'static [(Probe, &'static str)] {
        match self {
            // musl-gcc: ring's C with musl's headers.
            Arch::X86_64 => &[(Probe::Command("musl-gcc"), "musl-tools")],
            // The cross compiler (ring's C, and the linker) with its binutils (objcopy).
            Arch::Aarch64 => &[
                (
                    Probe::Command("aarch64-linux-gnu-gcc"),
                    "gcc-aarch64-linux-gnu",
                ),
                (
                    Probe::Command("aarch64-linux-gnu-objcopy"),
                    "binutils-aarch64-linux-gnu",
                ),
            ],
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}
