//! One line through `decode_line` as an OpenZiti source reads it, and as `format = "auto"`
//! does (which picks OpenZiti for a line with a `namespace`).
#![no_main]

use herald::decode::{decode_line, Context, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Openziti, Format::Auto] {
        let mut ctx = Context::new("fuzz", "unknown");
        ctx.format = format;
        if let Err(e) = decode_line(data, 7, &ctx) {
            assert_eq!(e.line, 7);
            let _ = e.to_string();
        }
    }
});
