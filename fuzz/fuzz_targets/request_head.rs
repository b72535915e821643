#![no_main]
//! libFuzzer entry for `licgate::fuzzing::request_head`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::request_head(data));
