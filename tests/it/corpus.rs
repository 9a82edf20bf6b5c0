//! Every line of the OpenZiti corpus (taken from OpenZiti's own code, docs and changelogs;
//! sources in tests/data/openziti-doc-samples.sources.txt) decodes to what it says.

use std::borrow::Cow;

use herald::decode::{decode_line, Context, Decoded, Ignored};
use herald::model::{EntityOp, Signal, Timestamp};

use crate::support::repo;

#[derive(Debug, PartialEq)]
enum Want {
    Obs(&'static str, Signal<'static>),
    Skip(Ignored),
}

fn slot(op: EntityOp) -> Signal<'static> {
    Signal::Entity {
        op,
        slot: herald::model::Slot {
            service: "3pjMOKY2icS8fkQ1lfHmrP".into(),
            router: "5g2QrZxFcw".into(),
            host: "IahyE.5Scw".into(),
        },
    }
}

#[test]
fn every_corpus_line_decodes_as_expected() {
    use Want::*;
    let s = |x: &'static str| Cow::Borrowed(x);
    let want = [
        Obs("ctrl1", Signal::Members { index: 7, members: vec![s("ctrl1"), s("ctrl2")] }),
        Obs("ctrl1", Signal::Peer { peer: s("ctrl2"), connected: true }),
        Obs("replayer", Signal::View { leader: None }),
        Obs("replayer", Signal::View { leader: Some(s("ctrl1")) }),
        Obs("ctrl1", Signal::Router { router: s("JAoyjafljO"), online: true }),
        Obs("ctrl1", Signal::Router { router: s("JAoyjafljO"), online: false }),
        Skip(Ignored::TerminatorDetail),
        Skip(Ignored::TerminatorDetail),
        Obs("ctrl_client", slot(EntityOp::Created)),
        Obs("ctrl_client", slot(EntityOp::Deleted)),
        Skip(Ignored::Namespace),
        Skip(Ignored::Namespace),
        Skip(Ignored::Namespace),
        Skip(Ignored::Namespace),
        Skip(Ignored::Namespace),
        Skip(Ignored::Namespace),
        Obs("replayer", Signal::Router { router: s("JAoyjafljO"), online: true }),
        Obs("replayer", Signal::Router { router: s("JAoyjafljO"), online: false }),
        Skip(Ignored::TerminatorDetail),
        Skip(Ignored::EntityType),
        Skip(Ignored::Namespace),
        Skip(Ignored::Namespace),
    ];
    let text = std::fs::read_to_string(repo("tests/data/openziti-doc-samples.jsonl")).unwrap();
    let sources =
        std::fs::read_to_string(repo("tests/data/openziti-doc-samples.sources.txt")).unwrap();
    assert_eq!(text.lines().count(), want.len());
    assert_eq!(sources.lines().count(), want.len(), "every line has its source");
    let ctx = Context::new("prod", "replayer");
    for (i, (line, want)) in text.lines().zip(want).enumerate() {
        let got = match decode_line(line.as_bytes(), i as u64 + 1, &ctx) {
            Ok(Decoded::Observation(o)) => {
                assert_eq!(o.cluster, "prod");
                Obs(Box::leak(o.reporter.to_string().into_boxed_str()), o.signal.into_owned())
            }
            Ok(Decoded::Ignored(r)) => Skip(r),
            Err(e) => panic!("corpus line {}: {e}", i + 1),
        };
        assert_eq!(got, want, "corpus line {}", i + 1);
    }
}

#[test]
fn corpus_timestamps_keep_offset_and_nanoseconds() {
    let text = std::fs::read_to_string(repo("tests/data/openziti-doc-samples.jsonl")).unwrap();
    let line = text.lines().nth(3).unwrap();
    let ctx = Context::new("prod", "x");
    let Ok(Decoded::Observation(o)) = decode_line(line.as_bytes(), 4, &ctx) else { panic!() };
    assert_eq!(o.at, Timestamp::parse("2025-01-10T18:54:48.151522421Z").unwrap());
}

#[test]
fn the_corpus_replays_without_decode_errors() {
    let path = repo("tests/data/openziti-doc-samples.jsonl");
    let out = crate::support::run(&["replay", path.to_str().unwrap()], b"");
    let s = crate::support::summary(&out);
    assert_eq!((s["records"], s["decode_errors"], s["ignored"]), (22, 0, 12));
}
