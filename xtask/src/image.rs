//! `cargo xtask image`: an OCI image of the static sensor for Kubernetes
//! nodes (deploy/kubernetes/tinyexec.yaml), built from scratch here: the
//! binary and the empty directories it writes to, nothing pulled. Podman
//! (Debian's, installed when missing) builds it from a Containerfile with
//! `FROM scratch`, every timestamp 0 so the same binary gives the same
//! image, and saves it as an OCI archive under `target/image/` that
//! `podman load -i` (or `ctr images import`, `docker load`) reads.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use tinyexec_harness::container::podman;

use crate::{arch::Arch, dist, run_cmd, setup, step};

/// The name the `DaemonSet` runs.
pub const NAME: &str = "localhost/tinyexec-sensor";

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Architecture (default: this machine's): `x86_64` or aarch64.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
}

/// The image's reference, `NAME:VERSION`.
pub fn reference() -> String {
    format!("{NAME}:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the image for `arch`; returns the OCI archive's path.
pub fn build(root: &Path, arch: Arch) -> Result<PathBuf> {
    setup::image_tools()?;
    let sensor = dist::sensor(root, arch)?;
    let dir = root.join("target/image");
    let context = dir.join(format!("context-{arch}"));
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("removing {}", context.display()))?;
    }
    fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    fs::copy(&sensor, context.join("tinyexec-sensor"))
        .with_context(|| format!("copying {}", sensor.display()))?;
    // Directories the read-only root must hold as mount points or for the
    // sensor's own writes (the DaemonSet mounts volumes over them).
    for d in ["tmp", "run/tinyexec", "etc/tinyexec", "var/lib/tinyexec"] {
        fs::create_dir_all(context.join("root").join(d))?;
    }
    fs::write(
        context.join("Containerfile"),
        format!(
            "# The sensor alone (written by xtask/src/image.rs).\n\
             FROM scratch\n\
             COPY root/ /\n\
             COPY tinyexec-sensor /usr/bin/tinyexec-sensor\n\
             LABEL org.opencontainers.image.title=\"tinyexec-sensor\" \\\n      \
             org.opencontainers.image.version=\"{version}\" \\\n      \
             org.opencontainers.image.licenses=\"MIT OR Apache-2.0\"\n\
             ENTRYPOINT [\"/usr/bin/tinyexec-sensor\"]\n\
             CMD [\"run\"]\n",
            version = env!("CARGO_PKG_VERSION"),
        ),
    )?;
    let reference = reference();
    step(&format!(
        "building the image {reference} for {arch} (podman, from scratch)"
    ));
    run_cmd(
        podman()
            .args([
                "build",
                "--quiet",
                "--timestamp",
                "0",
                "--arch",
                arch.debian(),
            ])
            .args(["--tag", &reference])
            .arg(&context),
    )?;
    let out = dir.join(format!(
        "tinyexec-sensor-{}-{}.oci.tar",
        env!("CARGO_PKG_VERSION"),
        arch.debian()
    ));
    let _ = fs::remove_file(&out);
    run_cmd(
        podman()
            .args(["save", "--quiet", "--format", "oci-archive", "--output"])
            .arg(&out)
            .arg(&reference),
    )?;
    step(&format!("wrote {} ({reference})", out.display()));
    Ok(out)
}

pub fn run(root: &Path, args: &Args) -> Result<()> {
    build(root, args.arch.unwrap_or_else(Arch::host)).map(drop)
}
