//! Property tests: the line decoder and the command parser on arbitrary input never panic,
//! never exceed their bounds, and the decoder does not depend on how the bytes were chunked.

use bytes::{Bytes, BytesMut};
use linechat::proto::codec::{check_text, Frame, LineDecoder};
use proptest::prelude::*;

/// The obvious definition: split on `\n`, drop one `\r` before it, judge the length.
fn reference(input: &[u8], max_line: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    // The unterminated tail is not a frame yet, unless it is already too long to be one.
    let tail = parts.pop().unwrap_or_default();
    for mut line in parts {
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        frames.push(if line.len() > max_line {
            Frame::TooLong
        } else {
            Frame::Line(Bytes::copy_from_slice(line))
        });
    }
    if tail.len() > max_line + 1 {
        frames.push(Frame::TooLong);
    }
    frames
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    // Bytes biased towards the interesting ones, so short and long lines, \r\n and lone \r
    // all occur often.
    prop::collection::vec(
        prop_oneof![
            3 => Just(b'a'),
            1 => Just(b'\n'),
            1 => Just(b'\r'),
            1 => any::<u8>(),
        ],
        0..2000,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn decoder_matches_the_reference_however_the_input_is_chunked(
        data in input(),
        max_line in 1usize..64,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        cuts.push(data.len());
        cuts.sort_unstable();
        let mut decoder = LineDecoder::new(max_line);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut from = 0;
        for to in cuts {
            buf.extend_from_slice(&data[from..to]);
            from = to;
            while let Some(frame) = decoder.decode(&mut buf) {
                if let Frame::Line(line) = &frame {
                    prop_assert!(line.len() <= max_line);
                }
                frames.push(frame);
            }
            // The bound the server relies on: an unfinished line never holds more than
            // max_line + 1 bytes between reads.
            prop_assert!(buf.len() <= max_line + 1, "buffered {} > {}", buf.len(), max_line + 1);
        }
        prop_assert_eq!(frames, reference(&data, max_line));
    }

    #[test]
    fn text_policy_never_panics_and_accepts_only_clean_utf8(data in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(text) = check_text(&data) {
            prop_assert!(text.chars().all(|c| c == '\t' || !c.is_control()));
        }
    }

    #[test]
    fn command_parser_never_panics(line in "/\\PC{0,80}", raw in ".{0,80}") {
        let _ = linechat::proto::line::cmd::parse(&line);
        let _ = linechat::proto::line::cmd::parse(&raw);
        if let Err(e) = linechat::proto::line::cmd::parse(&line) {
            let reply = e.to_string();
            prop_assert!(reply.starts_with("Unknown command: /") || reply.starts_with("Usage: /"));
        }
    }
}
