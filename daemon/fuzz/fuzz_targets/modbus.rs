#![no_main]

#[path = "bounded.rs"]
mod bounded;

#[global_allocator]
static ALLOCATOR: bounded::Bounded = bounded::Bounded;

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinloom::fuzzing::modbus(data));
