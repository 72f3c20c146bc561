#![no_main]
// Body (and its invariants) in mdproxy_core::testing::fuzz, replayed over fuzz/seeds by cargo test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mdproxy_core::testing::fuzz::ovn_replica(data));
