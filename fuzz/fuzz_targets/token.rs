#![no_main]
//! libFuzzer entry for `licgate::fuzzing::token`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::token(data));
