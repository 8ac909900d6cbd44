//! cargo-fuzz target `settings`: see tinyexec_user::fuzzing::settings for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinyexec_user::fuzzing::settings(data));
