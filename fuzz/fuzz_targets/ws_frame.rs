//! The WebSocket frame header parser on arbitrary bytes: it never panics, a header that
//! arrives in pieces is judged the same as one that arrives whole (`Ok(None)` until the last
//! byte it needs, then the same answer), and a header it accepts, written out again, parses
//! back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linechat::proto::web::frame::{parse_header, put_header, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    let whole = parse_header(data);
    if let Ok(Some((_, used))) = &whole {
        assert!(*used <= MAX_HEADER && *used <= data.len());
    }
    // Every prefix is either "not yet" or already the whole answer: parsing never needs
    // bytes past the header, and an error is found as soon as its byte is there.
    let mut decided = false;
    for cut in 0..=data.len().min(MAX_HEADER) {
        let part = parse_header(&data[..cut]);
        match part {
            Ok(None) => assert!(!decided, "undecided again at {cut}: {data:?}"),
            ref answer => {
                decided = true;
                assert_eq!(answer, &whole, "at {cut}: {data:?}");
            }
        }
    }
    let Ok(Some((header, _))) = whole else { return };
    if !header.fin {
        return; // put_header writes final frames only
    }
    let Ok(len) = usize::try_from(header.len) else { return };
    let mut out = Vec::new();
    put_header(&mut out, header.opcode, header.mask, len);
    assert_eq!(parse_header(&out), Ok(Some((header, out.len()))), "{data:?}");
});
