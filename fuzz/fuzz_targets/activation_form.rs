#![no_main]
//! libFuzzer entry for `licgate::fuzzing::activation_form`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::activation_form(data));
