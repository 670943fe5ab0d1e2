//! The IRC message parser on arbitrary text: it never panics, what it accepts fits the
//! grammar, and writing an accepted message out gives exactly one line that parses back to it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use linechat::proto::irc::message::{parse, ParseError, MAX_BODY_LEN, MAX_PARAMS};

fuzz_target!(|line: &str| {
    let Ok(msg) = parse(line) else { return };
    assert!(msg.params.len() <= MAX_PARAMS);
    let mut out = BytesMut::new();
    msg.write_to(&mut out);
    let written = std::str::from_utf8(&out).expect("UTF-8 in, UTF-8 out");
    let written = written.strip_suffix("\r\n").expect("ends with CRLF");
    assert!(!written.contains(['\r', '\n', '\0']), "{written:?}");
    match parse(written) {
        Ok(again) => assert_eq!(again, msg, "{written:?}"),
        // A 15th parameter with spaces gains a `:` when written, which can cross the limit.
        Err(ParseError::InputTooLong) => {
            let body = written
                .strip_prefix('@')
                .map_or(written, |t| t.split_once(' ').unwrap().1);
            assert!(body.len() > MAX_BODY_LEN, "{written:?}");
        }
        Err(e) => panic!("{written:?} no longer parses: {e}"),
    }
});
