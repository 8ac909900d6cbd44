//! cargo-fuzz target `evaluate`: see tinyexec_user::fuzzing::evaluate for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinyexec_user::fuzzing::evaluate(data));
