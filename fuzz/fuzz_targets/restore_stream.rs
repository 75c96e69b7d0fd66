#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bitdust_tests::fuzz::restore_stream(data));
