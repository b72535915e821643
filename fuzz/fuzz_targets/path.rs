#![no_main]
//! libFuzzer entry for `licgate::fuzzing::path`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::path(data));
