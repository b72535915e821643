#![no_main]
//! libFuzzer entry for `licgate::fuzzing::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::config(data));
