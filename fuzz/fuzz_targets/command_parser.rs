//! The command parser on arbitrary text: it never panics, and every refusal is one of the two
//! answers a user can act on.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    for candidate in [line, &format!("/{line}")] {
        if let Err(e) = linechat::proto::line::cmd::parse(candidate) {
            let reply = e.to_string();
            assert!(
                reply.starts_with("Unknown command: /") || reply.starts_with("Usage: /"),
                "{reply}"
            );
        }
    }
});
