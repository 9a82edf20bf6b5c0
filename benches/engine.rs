//! Decode and engine throughput over the generator's default mix, against serde_json alone.
//!
//! `cargo bench --bench engine` (figures in BENCHMARKS.md).

use std::io;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::de::IgnoredAny;

use herald::decode::{decode_line, Context};
use herald::engine::EngineConfig;
use herald::generate::{self, Options};
use herald::replay::Replay;

const LINES: u64 = 100_000;

fn log() -> Vec<u8> {
    let mut out = Vec::new();
    generate::write(&Options { lines: LINES, ..Options::default() }, &mut out).expect("generate");
    out
}

fn lines(log: &[u8]) -> Vec<&[u8]> {
    log.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect()
}

fn throughput(c: &mut Criterion) {
    let log = log();
    let lines = lines(&log);
    let mut g = c.benchmark_group("default_mix");
    g.throughput(Throughput::Elements(LINES));
    g.sample_size(20);

    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for l in &lines {
                let v: serde_json::Value = serde_json::from_slice(l).expect("json");
                std::hint::black_box(v);
            }
        })
    });
    g.bench_function("serde_json_ignored_any", |b| {
        b.iter(|| {
            for l in &lines {
                let v: IgnoredAny = serde_json::from_slice(l).expect("json");
                std::hint::black_box(v);
            }
        })
    });
    let ctx = Context::new("prod", "unknown");
    g.bench_function("decode", |b| {
        b.iter(|| {
            for (i, l) in lines.iter().enumerate() {
                let _ = std::hint::black_box(decode_line(l, i as u64, &ctx));
            }
        })
    });
    g.bench_function("decode_engine_replay", |b| {
        b.iter_batched(
            || Replay::new(EngineConfig::default(), Context::new("prod", "unknown")),
            |replay| replay.run(&log[..], &mut io::sink(), |_| {}).expect("replay"),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
