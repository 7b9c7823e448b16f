#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinloom::fuzzing::plugin_outputs(data));
