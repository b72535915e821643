#![no_main]
//! libFuzzer entry for `licgate::fuzzing::odoo_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| licgate::fuzzing::odoo_request(data));
