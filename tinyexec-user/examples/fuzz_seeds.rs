//! Writes each fuzz target's seed corpus, made in code by
//! `tinyexec_user::fuzzing::seeds`, to `DIR/TARGET/seed-NAME`: `cargo xtask fuzz`
//! runs it before fuzzing.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};
use tinyexec_user::fuzzing::{TARGETS, seeds};

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: fuzz_seeds DIR")?,
    );
    for (target, _) in TARGETS {
        let sub = dir.join(target);
        fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        for (name, bytes) in seeds(target) {
            let path = sub.join(format!("seed-{name}"));
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
