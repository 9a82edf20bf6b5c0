//! Snapshots written by earlier releases restore and continue as they would have.
//!
//! A restart after an upgrade reads the snapshot the previous release wrote; a format change
//! that went unnoticed would re-emit every state as initial or lose pending windows. The bytes
//! below were written by herald before the engine's types were renamed and moved (format 1).

use super::*;

/// A log that leaves every kind of state in a snapshot: emitted and pending values of every
/// key kind, a spinning slot, a staged half, a split-brain candidate, a probe verdict.
fn snapshot_log_before(h: &mut H) {
    for r in ["r1", "r2", "r3"] {
        h.at(t(0.0), r, has_leader("r1"));
    }
    h.at(t(0.5), "r1", members(1, &["r1", "r2", "r3"]));
    h.at(t(1.0), "r1", Signal::ReadOnly { read_only: false });
    h.at(t(1.0), "r2", router("x", true));
    h.at(t(1.5), "r1", peer("r2", true));
    h.at(t(2.0), "herald", probe("n9", false));
    h.at(t(3.0), "herald", probe("n9", false));
    for i in 0..3 {
        let at = 4.0 + f64::from(i);
        h.at(t(at), "r1", entity(EntityOp::Created));
        h.at(t(at + 0.5), "r1", entity(EntityOp::Deleted));
    }
    h.at(
        t(7.0),
        "r2",
        Signal::StagedEntity {
            event_id: "e1".into(),
            op: EntityOp::Created,
            slot: Slot { service: "s2".into(), router: "rtr".into(), host: "".into() },
        },
    );
    h.at(t(8.0), "r2", gained());
    h.at(t(9.0), "r3", peer("r1", false));
    h.at(t(9.5), "r2", router("x", false));
    h.at(t(9.6), "r2", router("y", true));
    h.at(t(10.0), "r1", Signal::ReadOnly { read_only: true });
    h.at(t(10.0), "r1", peer("r3", false));
}

fn snapshot_log_after(h: &mut H) {
    h.at(t(10.5), "r1", Signal::Commit { event_id: "e1".into() });
    h.at(t(10.6), "r1", entity(EntityOp::Created));
    h.at(t(11.0), "r2", peer("r1", false));
    h.at(t(12.0), "r3", has_leader("r2"));
    assert_eq!(h.outcome(t(11.5), "r3", has_leader("r1")), Outcome::Stale);
    h.at(t(13.0), "r1", members(2, &["r2", "r3"]));
    h.at(t(20.0), "herald", probe("n9", true));
    h.finish();
}

fn summary(e: &ClusterEvent) -> String {
    let subject = [&e.node, &e.peer, &e.service, &e.router, &e.host, &e.leader_id, &e.previous]
        .iter()
        .map(|p| p.as_deref().unwrap_or("-"))
        .collect::<Vec<_>>()
        .join(",");
    let list = |l: &Option<Vec<String>>| l.as_ref().map_or("-".to_string(), |l| l.join("/"));
    format!(
        "{} {} {} {} i={} s={} r={} m={} {}",
        e.kind.as_str(),
        subject,
        (e.at.0 - T0) / 1_000_000,
        (e.stable_at.0 - T0) / 1_000_000,
        e.initial,
        e.suppressed,
        list(&e.reporters),
        list(&e.members),
        &e.id[..8]
    )
}

/// `snapshot_log_before`'s snapshot, as format 1 wrote it.
const FORMAT_1: &[&str] = &[
    "01010163000502723102723202723306686572616c64026e390300010203000101008080ca91e9a9b3993001",
    "018090a9d2b3aab39930020101008080ca91e9a9b3993000ffffffffffffffffff010101010180c0fcdea4aa",
    "b3993000ffffffffffffffffff010101000000010001018090a9d2b3aab3993080e0d5c5c2aab39930110001",
    "03000102000001010100000180c0fcdea4aab399300d0000030001010000008080ca91e9a9b3993002010100",
    "00008080ca91e9a9b3993001010101000080c0fcdea4aab399300300020001008090a9d2b3aab3993080a088",
    "93feaab399301200008090a9d2b3aab39930020000010080e8d298acaab3993080f8b1d9f6aab399300e0000",
    "80e8d298acaab399300001010100000180bc8ba8f4a9b3993002000102010201780101010080fcbdf5afaab3",
    "993080cceae8beaab399300f0001010080fcbdf5afaab3993080fcbdf5afaab3993001790001018080edd4b0",
    "aab3993080d099c8bfaab3993010000101018080edd4b0aab399308080edd4b0aab399300104010000000001",
    "000280d0f684f8a9b399300100000180f8ccbeffa9b3993080f8ccbeffa9b3993001097376631f7274721f68",
    "000001038084bbc899aab3993000010b008084bbc899aab3993001008084bbc899aab3993001026531018098",
    "a6a59daab3993000027332037274720000018098a6a59daab399300265310000000000000000000000000000",
    "0000008090a9d2b3aab39930120780cceae8beaab3993080fcbdf5afaab399300f000601788088acffc9aab3",
    "993080c0fcdea4aab399300d000380d099c8bfaab399308080edd4b0aab39930100006017980e4f5ccd8adb3",
    "993080e4f5ccd8adb399300b0008097376631f7274721f6880f8b1d9f6aab3993080e8d298acaab399300e00",
    "05020080e0d5c5c2aab399308090a9d2b3aab3993011000180a08893feaab399308090a9d2b3aab399301200",
    "0500020a8080c2a6fbceda99300004008080c2a6fbceda99300004018080c2a6fbceda993000040280a898e0",
    "82cfda99300006017880bc83bd86cfda99300005000180d0ee998acfda993000070480a09b8d99cfda993000",
    "08097376631f7274721f6880e8caadbecfda9930000502008080e5e9c2cfda9930000601798090a1e7c5cfda",
    "993000050002160000000b00",
];

/// What `snapshot_log_after` emitted after `FORMAT_1` in the release that wrote it.
const FORMAT_1_CONTINUES: &[&str] = &[
    "router.offline -,-,-,x,-,-,- 9500 11500 i=false s=0 r=- m=- 4bde2577",
    "router.online -,-,-,y,-,-,- 9600 11600 i=true s=0 r=- m=- 108b9bc7",
    "node.has_leader r3,-,-,-,-,r2,- 12000 14000 i=false s=0 r=- m=- b21666bd",
    "cluster.leader_elected -,-,-,-,-,r2,r1 12000 14000 i=false s=0 r=r2/r3 m=- 9939634b",
    "cluster.members_changed -,-,-,-,-,-,- 13000 15000 i=false s=0 r=- m=r2/r3 618ac9a0",
    "peer.disconnected r3,r1,-,-,-,-,- 9000 19000 i=true s=0 r=- m=- 74b9e033",
    "peer.disconnected r1,r3,-,-,-,-,- 10000 20000 i=true s=0 r=- m=- 31452fbe",
    "node.up n9,-,-,-,-,-,- 20000 20000 i=false s=0 r=- m=- 23ca3d45",
    "peer.disconnected r2,r1,-,-,-,-,- 11000 21000 i=true s=0 r=- m=- 8e10da17",
    "node.down r1,-,-,-,-,-,- 11000 21000 i=true s=0 r=- m=- 6a96e6f5",
    "terminator.spin_stopped -,-,svc,rtr,h,-,- 66500 66500 i=false s=1 r=- m=- 67bc3f03",
];

fn bytes(hex: &[&str]) -> Vec<u8> {
    let hex: String = hex.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn a_format_1_snapshot_restores_and_continues_as_the_release_that_wrote_it() {
    let engine = Engine::restore(EngineConfig::default(), &bytes(FORMAT_1)).expect("restore");
    let mut h = H { engine, log: Vec::new() };
    snapshot_log_after(&mut h);
    let continued: Vec<String> = h.log.iter().map(summary).collect();
    assert_eq!(continued, FORMAT_1_CONTINUES);
    let s = h.engine.stats();
    assert_eq!((s.observed, s.stale, s.suppressed, s.ignored, s.events), (29, 1, 3, 0, 22));
}

#[test]
fn a_snapshot_restores_and_continues_as_an_uninterrupted_run() {
    let mut whole = H::new();
    snapshot_log_before(&mut whole);
    let n = whole.log.len();
    let bytes = whole.engine.snapshot().expect("snapshot");
    snapshot_log_after(&mut whole);

    let engine = Engine::restore(EngineConfig::default(), &bytes).expect("restore");
    let mut resumed = H { engine, log: Vec::new() };
    snapshot_log_after(&mut resumed);
    assert_eq!(resumed.log, whole.log[n..]);
    assert_eq!(resumed.engine.stats(), whole.engine.stats());
}
