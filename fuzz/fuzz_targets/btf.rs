//! cargo-fuzz target `btf`: see tinyexec_user::fuzzing::btf for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinyexec_user::fuzzing::btf(data));
