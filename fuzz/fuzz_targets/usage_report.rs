#![no_main]
//! libFuzzer entry for `licgate::fuzzing::usage_report`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::usage_report(data));
