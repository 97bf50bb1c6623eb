//! Rating tests: `cargo test -p bss-domain rating`.
