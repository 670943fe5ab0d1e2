//! The line decoder on arbitrary bytes cut at arbitrary points: it never panics, never yields
//! a line over the limit, never holds more than `max_line + 1` bytes of an unfinished line, and
//! frames the same input the same way however it is cut; the text policy never panics and
//! passes only clean UTF-8.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use linechat::proto::codec::{check_text, Frame, LineDecoder};

fn frames(data: &[u8], max_line: usize, cuts: &[usize]) -> Vec<Frame> {
    let mut decoder = LineDecoder::new(max_line);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&data.len())) {
        buf.extend_from_slice(&data[from..to]);
        from = to;
        while let Some(frame) = decoder.decode(&mut buf) {
            if let Frame::Line(line) = &frame {
                assert!(line.len() <= max_line);
                if let Ok(text) = check_text(line) {
                    assert!(text.chars().all(|c| c == '\t' || !c.is_control()));
                }
            }
            out.push(frame);
        }
        assert!(buf.len() <= max_line + 1, "buffered {} > {}", buf.len(), max_line + 1);
    }
    out.extend(decoder.decode_eof(&mut buf));
    out
}

fuzz_target!(|input: &[u8]| {
    // The first two bytes choose the limit and how the rest is cut into reads.
    let [a, b, data @ ..] = input else { return };
    let max_line = usize::from(*a % 64) + 1;
    let step = usize::from(*b).max(1);
    let cuts: Vec<usize> = (step..data.len()).step_by(step).collect();
    assert_eq!(frames(data, max_line, &cuts), frames(data, max_line, &[]));
});
