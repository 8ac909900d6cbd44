//! The start-up self-test.

pub mod canary;
mod elf;
