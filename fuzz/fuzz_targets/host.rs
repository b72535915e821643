#![no_main]
//! libFuzzer entry for `licgate::fuzzing::host`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::host(data));
