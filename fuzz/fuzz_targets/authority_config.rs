#![no_main]
//! libFuzzer entry for `licgate::fuzzing::authority_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::authority_config(data));
