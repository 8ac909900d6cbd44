//! cargo-fuzz target `exclusions`: see tinyexec_user::fuzzing::exclusions for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinyexec_user::fuzzing::exclusions(data));
