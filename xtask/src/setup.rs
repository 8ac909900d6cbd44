//! Installing what the build and the tests need, once, with a word about each step.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    arch::Arch,
    cargo,
    cmd::{Probe, output_of},
    files::find_in,
    run_cmd, step,
};

/// bpf-linker 0.13 is the release for LLVM 22, the nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";
/// The libFuzzer driver for the fuzz targets in `fuzz/`.
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// Debian packages the tests use, as (how to tell it is there, package):
/// bpftool cross-checks our BTF parser, yara is the reference `scan` must agree
/// with, rsyslog receives the CEF output, python3 and openssl run the Sentinel
/// stand-in; node runs Microsoft's Kusto parser over the Sentinel content, and
/// systemd-analyze and strace check the systemd unit (tests/systemd.rs); runc
/// runs a real container from a busybox-static rootfs (tests/containers.rs),
/// and Docker, containerd and Podman name theirs (tests/workloads.rs).
const TEST_PACKAGES: &[(Probe, &str)] = &[
    (Probe::Command("bpftool"), "bpftool"),
    (Probe::Command("yara"), "yara"),
    (Probe::Command("rsyslogd"), "rsyslog"),
    (Probe::Command("python3"), "python3"),
    (Probe::Command("openssl"), "openssl"),
    (Probe::Command("node"), "nodejs"),
    (Probe::Command("npm"), "npm"),
    (Probe::Command("systemd-analyze"), "systemd"),
    (Probe::Command("strace"), "strace"),
    (Probe::Command("runc"), "runc"),
    // tests/workloads.rs: real runtimes whose state names the workload.
    (Probe::Command("dockerd"), "docker.io"),
    (Probe::Command("ctr"), "containerd"),
    (Probe::Command("podman"), "podman"),
    // tests/hostile.rs: a FUSE file system that never answers (Debian's interpreter's module).
    (
        Probe::Shell("/usr/bin/python3 -c 'import fusepy'"),
        "python3-fusepy",
    ),
    (
        Probe::Shell("dpkg-query -W -f '${Status}' busybox-static | grep -q 'ok installed'"),
        "busybox-static",
    ),
];
/// What the kernel matrix uses: QEMU boots the kernels (`x86_64` and arm64),
/// objcopy strips the binaries copied in, the keyring checks the apt sources
/// of the kernels and of the VMs' userland (busybox-static, fetched per
/// architecture like the kernels).
const VM_PACKAGES: &[(Probe, &str)] = &[
    (Probe::Command("qemu-system-x86_64"), "qemu-system-x86"),
    (Probe::Command("qemu-system-aarch64"), "qemu-system-arm"),
    (Probe::Command("objcopy"), "binutils"),
    (
        Probe::Shell("test -f /usr/share/keyrings/debian-archive-keyring.gpg"),
        "debian-archive-keyring",
    ),
];

/// What the systemd deployment VM (xtask/src/vm/deployment.rs) is made
/// with: mmdebstrap builds its Debian userland, bsdtar turns that tarball
/// with the test's files into the newc archive the kernel unpacks.
const DEPLOYMENT_PACKAGES: &[(Probe, &str)] = &[
    (Probe::Command("mmdebstrap"), "mmdebstrap"),
    (Probe::Command("bsdtar"), "libarchive-tools"),
];

/// What `cargo xtask package` builds the RPM with, and tests/package.rs
/// lints it with: Debian's packages of the RHEL family's own tools.
const RPM_PACKAGES: &[(Probe, &str)] = &[
    (Probe::Command("rpmbuild"), "rpm"),
    (Probe::Command("rpmlint"), "rpmlint"),
];

/// Microsoft's Kusto.Language for JavaScript, which the Sentinel content test runs
/// under node (tests/kusto.rs); pinned so every machine analyses with the same parser.
const KUSTO_LANGUAGE: &str = "@kusto/language-service-next";
const KUSTO_LANGUAGE_VERSION: &str = "12.4.1";

pub fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("this must run as root: {why}. Try `sudo -E cargo xtask ...`");
    }
    Ok(())
}

/// The nightly toolchain with rust-src (for `-Z build-std=core`) and bpf-linker.
pub fn toolchain(root: &Path) -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        step("adding the rust-src component to the nightly toolchain");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))
        .context("rust-src is needed to build core for the BPF target")?;
    }
    bpf_linker(root, &sysroot)
}

fn nightly_sysroot() -> Result<PathBuf> {
    let get =
        || output_of(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]));
    if let Some(s) = get() {
        return Ok(PathBuf::from(s));
    }
    step("installing the nightly toolchain (the eBPF crate needs it)");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))?;
    get()
        .map(PathBuf::from)
        .context("rustc +nightly still not usable after installing it")
}

/// Installs bpf-linker into `<root>/.tools`, linked against the nightly's own libLLVM.
fn bpf_linker(root: &Path, sysroot: &Path) -> Result<()> {
    let tools = root.join(".tools");
    let linker = tools.join("bin/bpf-linker");
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    if output_of(Command::new(&linker).arg("--version")).as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    step(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} for LLVM 22 into {} (once, about 2 minutes)",
        tools.display()
    ));
    let sys_lib = sysroot.join("lib");
    let llvm_so = find_in(&sys_lib, |n| {
        n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-")
    })
    .with_context(|| format!("reading {}", sys_lib.display()))?
    .with_context(|| {
            format!(
                "no libLLVM in {}; install Debian's llvm-22-dev and run \
                 `LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@{BPF_LINKER_VERSION} --locked \
                 --no-default-features --features llvm-22 --root {}`",
                sys_lib.display(),
                tools.display()
            )
        })?;
    // bpf-linker's build looks for `$LLVM_PREFIX/lib/libLLVM.so`.
    let prefix = tools.join("llvm");
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    symlink(&llvm_so, &link).with_context(|| format!("linking {}", link.display()))?;
    run_cmd(
        cargo()
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ])
            .args(["--no-default-features", "--features", "llvm-22", "--root"])
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix)
            // Find the nightly's libLLVM at run time without LD_LIBRARY_PATH.
            .env(
                "RUSTFLAGS",
                format!("-C link-arg=-Wl,-rpath,{}", sys_lib.display()),
            ),
    )
    .context("installing bpf-linker")?;
    if output_of(Command::new(&linker).arg("--version")).as_deref() != Some(want.as_str()) {
        bail!("{} does not run after installing it", linker.display());
    }
    Ok(())
}

/// cargo-fuzz, the libFuzzer driver for `cargo xtask fuzz`, in `<root>/.tools`;
/// returns its path.
pub fn cargo_fuzz(root: &Path) -> Result<PathBuf> {
    let tools = root.join(".tools");
    let bin = tools.join("bin/cargo-fuzz");
    let want = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if output_of(Command::new(&bin).arg("--version")).as_deref() == Some(want.as_str()) {
        return Ok(bin);
    }
    step(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (once, about a minute)",
        tools.display()
    ));
    run_cmd(
        cargo()
            .args([
                "install",
                &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
                "--locked",
                "--force",
                "--root",
            ])
            .arg(&tools),
    )
    .context("installing cargo-fuzz")?;
    Ok(bin)
}

/// Rust's static (musl) target for `arch` and the Debian packages its build
/// needs (.cargo/config.toml names the compilers), installed when missing.
pub fn static_target(root: &Path, arch: Arch) -> Result<()> {
    let target = arch.musl_target();
    let installed =
        output_of(
            Command::new("rustup")
                .current_dir(root)
                .args(["target", "list", "--installed"]),
        )
        .unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == target) {
        step(&format!(
            "adding Rust's {target} target (the static binaries for {arch})"
        ));
        run_cmd(
            Command::new("rustup")
                .current_dir(root)
                .args(["target", "add", target]),
        )?;
    }
    install_missing(
        arch.build_packages(),
        &format!("the static build for {arch} uses"),
    )
}

/// Debian packages the tests (host and kernel matrix) need, installed when missing.
pub fn test_tools() -> Result<()> {
    install_missing(&[TEST_PACKAGES, VM_PACKAGES].concat(), "the tests use")
}

/// rpmbuild and rpmlint, installed when missing.
pub fn rpm_tools() -> Result<()> {
    install_missing(RPM_PACKAGES, "the RPM is built and checked with")
}

/// Debian packages the kernel matrix needs, installed when missing.
pub fn vm_tools() -> Result<()> {
    install_missing(VM_PACKAGES, "the kernel matrix uses")
}

/// What `cargo xtask image` builds with (tests/kubernetes.rs plays the
/// `DaemonSet`'s pod with it too, and catatonit is its pods' init).
const IMAGE_PACKAGES: &[(Probe, &str)] = &[
    (Probe::Command("podman"), "podman"),
    (
        Probe::Shell("test -x /usr/libexec/podman/catatonit || test -x /usr/bin/catatonit"),
        "catatonit",
    ),
];

pub fn image_tools() -> Result<()> {
    install_missing(IMAGE_PACKAGES, "`cargo xtask image` uses")
}

pub fn deployment_tools() -> Result<()> {
    vm_tools()?;
    install_missing(DEPLOYMENT_PACKAGES, "the systemd deployment VM uses")
}

fn install_missing(packages: &[(Probe, &str)], purpose: &str) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(probe, _)| !probe.holds())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages {purpose}: {}",
        missing.join(" ")
    ));
    apt_install(&missing)
}

/// Debian's way to tell maintainer scripts not to start services: the tests
/// start the daemons they use (dockerd, containerd) themselves.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// `apt-get install` of Debian packages (without their recommendations),
/// starting none of their services.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    let ours = !Path::new(POLICY_RC_D).exists();
    if ours {
        fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# cargo xtask: no service starts during set-up\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(
            POLICY_RC_D,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .with_context(|| format!("chmod {POLICY_RC_D}"))?;
    }
    let installed = run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if ours {
        fs::remove_file(POLICY_RC_D).with_context(|| format!("removing {POLICY_RC_D}"))?;
    }
    installed
}

/// Installs Microsoft's Kusto.Language from the npm registry into `<root>/.tools/kusto`
/// when missing or of another version. Returns the package's directory.
pub fn kusto_language(root: &Path) -> Result<PathBuf> {
    let prefix = root.join(".tools/kusto");
    let dir = prefix.join("node_modules").join(KUSTO_LANGUAGE);
    let installed = || {
        fs::read_to_string(dir.join("package.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
    };
    if installed().as_deref() == Some(KUSTO_LANGUAGE_VERSION) {
        return Ok(dir);
    }
    step(&format!(
        "installing Microsoft's Kusto parser ({KUSTO_LANGUAGE}@{KUSTO_LANGUAGE_VERSION}, npm) into {}",
        prefix.display()
    ));
    fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    run_cmd(
        Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-package-lock",
                "--no-audit",
                "--no-fund",
            ])
            .arg("--prefix")
            .arg(&prefix)
            .arg(format!("{KUSTO_LANGUAGE}@{KUSTO_LANGUAGE_VERSION}")),
    )
    .context("installing the Kusto parser with npm")?;
    match installed() {
        Some(v) if v == KUSTO_LANGUAGE_VERSION => Ok(dir),
        other => bail!(
            "{}: expected {KUSTO_LANGUAGE} {KUSTO_LANGUAGE_VERSION} after npm install, found {other:?}",
            dir.display()
        ),
    }
}
