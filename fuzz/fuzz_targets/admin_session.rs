#![no_main]
//! libFuzzer entry for `licgate::fuzzing::admin_session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::admin_session(data));
