//! Builds the eBPF object (`tinyexec-ebpf`'s bin for bpfel-unknown-none) with the
//! nightly toolchain and bpf-linker, so the daemon can embed it.

use std::{env, path::PathBuf};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    // Fuzz builds (cargo-fuzz passes `--cfg fuzzing`) exercise the parsers only:
    // an empty object spares them the nightly eBPF build and bpf-linker.
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR")?);
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

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    // PATH holds `.tools/bin` by now.
    if !skip && which::which("bpf-linker").is_err() {
        bail!(
            "bpf-linker not found (looked in {} and PATH): run `cargo xtask build` once, it installs it",
            tools.display()
        );
    }
    let ebpf_dir = root.join("tinyexec-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tinyexec-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
