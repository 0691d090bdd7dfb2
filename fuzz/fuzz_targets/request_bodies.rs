//! Fuzzes the HTTP API's JSON request bodies: arbitrary bytes read as each route's body and
//! turned into the domain's values, as the handlers do before they reach the store.
//!
//! It asserts that nothing panics and that every refusal is a 4xx: a body a client sends can
//! never be answered with a 5xx.

#![no_main]

use clarion_http::fuzzing::{RequestBody, read_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the route (`0` to `9` in the order of `RequestBody::ALL`), so that
    // one corpus holds inputs for every body.
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let route = RequestBody::ALL[usize::from(route.wrapping_sub(b'0')) % RequestBody::ALL.len()];
    if let Err(refused) = read_body(route, body) {
        assert!(
            (400..500).contains(&refused.status),
            "{route:?} answered {} to a client's body: {}",
            refused.status,
            refused.detail
        );
    }
});
