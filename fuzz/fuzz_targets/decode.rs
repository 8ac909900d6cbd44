//! cargo-fuzz target `decode`: see tinyexec_user::fuzzing::decode for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tinyexec_user::fuzzing::decode(data));
