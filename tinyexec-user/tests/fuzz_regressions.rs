//! Every input a fuzz target ever failed on, checked in under
//! `tests/fuzz-regressions/TARGET/`, replayed through the target's own check
//! (`tinyexec_user::fuzzing`): a fixed crash stays fixed.

use std::{fs, path::Path};

use tinyexec_user::fuzzing;

#[test]
fn every_checked_in_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut replayed = 0;
    for dir in fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let run = fuzzing::target(&name)
            .unwrap_or_else(|| panic!("{}: no fuzz target `{name}`", dir.display()));
        for input in fs::read_dir(&dir).unwrap() {
            let input = input.unwrap().path();
            eprintln!("{name}: {}", input.display());
            run(&fs::read(&input).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no input under {}", root.display());
}
