//! Builds the eBPF object (`tinyexec-ebpf`'s bin for bpfel-unknown-none) with the
//! nightly toolchain and bpf-linker, so the daemon can embed it.
//!
//! The nested build is aya-build 0.2's (`aya_build::build_ebpf`): the same
//! command, flags and target directory. aya-build relays every line the
//! nested cargo prints as a build-script warning, so a first build showed
//! some 34 lines of `warning: tinyexec-user@0.1.0:    Compiling core ...`
//! that read as if something were wrong. Here the nested cargo's progress is
//! kept and shown only when it fails (cargo's own progress bar runs
//! meanwhile); only the compiler's own warnings come out as warnings.

use std::{
    env,
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use object::build::elf::SectionData;
use serde_json::Value;

/// The eBPF crate, and the toolchain it needs (`-Z build-std`, bpf-linker for its LLVM).
const PACKAGE: &str = "tinyexec-ebpf";
const TOOLCHAIN: &str = "nightly";

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR")?);
    // Fuzz builds (cargo-fuzz passes `--cfg fuzzing`) exercise the parsers only:
    // an empty object spares them the nightly eBPF build and bpf-linker.
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        std::fs::write(out.join("tinyexec"), b"").context("writing the empty eBPF object")?;
        return Ok(());
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("workspace root")?;
    // `cargo xtask build` installs bpf-linker into the project's `.tools/bin`; put it on PATH.
    let tools = root.join(".tools/bin");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![tools.clone()];
    dirs.extend(env::split_paths(&path));
    let joined = env::join_paths(dirs).context("PATH")?;
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", &joined) };
    println!(
        "cargo:rerun-if-changed={}",
        tools.join("bpf-linker").display()
    );
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        println!("cargo:warning=AYA_BUILD_SKIP is set: the eBPF object is not built");
        return Ok(());
    }
    // PATH holds `.tools/bin` by now.
    if which::which("bpf-linker").is_err() {
        bail!(
            "bpf-linker not found (looked in {} and PATH): run `cargo xtask build` once, it installs it",
            tools.display()
        );
    }
    let ebpf_dir = root.join(PACKAGE);
    // The bin's sources are not a dependency of ours (only its lib is): rebuild on any change.
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    build_ebpf(&out)
}

/// `cargo build` of the eBPF crate's bins for the BPF target of our own
/// endianness, into a target directory of its own under `out` (the workspace's
/// is locked by the cargo running us); copies each bin to `out`.
fn build_ebpf(out: &Path) -> anyhow::Result<()> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported target endianness {other:?}"),
    };
    // The user-space target's architecture, for code that reads its registers.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let arch = if arch.starts_with("riscv64") {
        "riscv64"
    } else {
        &arch
    };
    let rustup = which::which("rustup").context(
        "rustup not found: the eBPF object is built with the nightly toolchain through rustup \
         (`cargo xtask build` sets it up)",
    )?;
    let target_dir = out.join("aya-build").join("target").join(PACKAGE);
    let mut cmd = Command::new(rustup);
    cmd.args(["run", TOOLCHAIN, "cargo", "build", "--package", PACKAGE])
        .args(["--bins", "--release", "--target", target])
        .args(["-Z", "build-std=core", "--message-format=json"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                format!("--cfg=bpf_target_arch=\"{arch}\""),
                "-Cdebuginfo=2".to_owned(),
                "-Clink-arg=--btf".to_owned(),
            ]
            .join("\x1f"),
        )
        // Ours are the stable toolchain's: the nightly's own must be used.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut stderr = child.stderr.take().context("the nested cargo's stderr")?;
    // Its progress, read meanwhile (a full pipe would stop it), for a failure's report.
    let progress = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = child.stdout.take().context("the nested cargo's stdout")?;
    let mut bins = Vec::new();
    let mut diagnostics = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the nested cargo's output")?;
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            diagnostics.push(line);
            continue;
        };
        match msg["reason"].as_str() {
            Some("compiler-artifact") => {
                if let (Some(name), Some(exe)) =
                    (msg["target"]["name"].as_str(), msg["executable"].as_str())
                {
                    bins.push((name.to_owned(), PathBuf::from(exe)));
                }
            }
            Some("compiler-message") => {
                let rendered = msg["message"]["rendered"].as_str().unwrap_or_default();
                if msg["message"]["level"] == "warning" {
                    for line in rendered.lines() {
                        println!("cargo:warning={line}");
                    }
                }
                diagnostics.push(rendered.trim_end().to_owned());
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the nested cargo")?;
    let progress = progress.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "building the eBPF object failed ({status}): {}\n{progress}\n{}",
            command_line(&cmd),
            diagnostics.join("\n")
        );
    }
    if bins.is_empty() {
        bail!("{} built no executable:\n{progress}", command_line(&cmd));
    }
    for (name, bin) in bins {
        let dst = out.join(name);
        let elf = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
        let elf = without_dwarf(&elf).with_context(|| format!("{}", bin.display()))?;
        std::fs::write(&dst, elf).with_context(|| format!("writing {}", dst.display()))?;
    }
    Ok(())
}

/// The object without its DWARF sections (`.debug_*`): bpf-linker made the
/// BTF from them, and nothing reads them after (the loader does not even hand
/// the BTF to the kernel). They were most of the object (1.2 of its 1.3 MB
/// with the kernel log's inlined code), and the object is embedded in the sensor.
fn without_dwarf(elf: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut builder = object::build::elf::Builder::read(elf).context("parsing the eBPF object")?;
    for section in &mut builder.sections {
        let name = section.name.as_slice();
        if name.starts_with(b".debug_") || name.starts_with(b".rel.debug_") {
            section.delete = true;
        }
    }
    builder.delete_orphans();
    // LLVM names sections from the symbols' string table; the writer wants a
    // table of their own.
    let has_names = builder
        .sections
        .iter()
        .any(|s| matches!(s.data, SectionData::SectionString));
    if !has_names {
        let names = builder.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.data = SectionData::SectionString;
    }
    let mut out = Vec::new();
    builder
        .write(&mut out)
        .context("writing the eBPF object without DWARF")?;
    Ok(out)
}

/// The command as a shell would show it, for an error.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
