#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora under fuzz/corpus/<target>/ from herald's own inputs.

    python3 fuzz/make-seeds.py [path/to/herald]   (default: target/debug/herald)

- decode_openziti: each line of the OpenZiti samples (tests/data, samples/) and of a short
  `herald generate` log.
- decode_generic: one line per generic signal, valid and broken.
- ingest: whole logs and slices of them, as /ingest bodies.
- config: the shipped configs and every TOML text in the config and integration tests.
- segment: real files. `herald run` reads a log into a state directory, with a
  disk-buffered sink, and stops on SIGTERM: the buffer's segments are kept.
- state_file: the single-file state (format 2) of tests/data, as the release before the store
  wrote it.
- entries: the engine entries of engines after generated logs, written by the ignored test
  `write_entries_fuzz_seeds` (`cargo test --lib`).

Each seed is named by the SHA-1 of its bytes, as libFuzzer names what it adds, so running the
script again adds nothing twice. The fuzzers' own finds go to the same folders.
"""

import codecs
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
HERALD = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target" / "debug" / "herald")
LOGS = [ROOT / "tests" / "data" / "openziti-doc-samples.jsonl", ROOT / "samples" / "openziti-ha.jsonl"]

HEAD = '"ts":"2025-03-01T10:00:00.5Z","cluster":"etcd-a","reporter":"n1"'
GENERIC = [
    '"signal":"leader","leader":"n2"',
    '"signal":"leader","leader":null',
    '"signal":"leader","leader":""',
    '"signal":"leader"',
    '"signal":"self_leader","is_leader":true',
    '"signal":"self_leader","is_leader":false',
    '"signal":"peer","peer":"n3","connected":false',
    '"signal":"peer","peer":"n3","connected":"yes"',
    '"signal":"members","members":["n1","n2"],"index":4',
    '"signal":"members","members":["a"],"index":18446744073709551615',
    '"signal":"members","members":["a"],"index":-1',
    '"signal":"read_only","read_only":true',
    '"signal":"node","node":"n3","online":false',
    '"signal":"entity","entity_type":"terminators","entity_id":"t9","op":"created",'
    '"slot":{"service":"s","router":"r","host":"h"}',
    '"signal":"entity","entity_type":"terminators","entity_id":"t9","op":"deleted",'
    '"slot":{"service":"s","router":"r"}',
    '"signal":"entity","entity_type":"t","entity_id":"1","op":"moved","slot":"s"',
    '"signal":"entity","entity_type":"terminators","entity_id":"t1","op":"created","slot":"svc"',
]


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def generated(lines, seed=1):
    out = subprocess.run(
        [HERALD, "generate", "--seed", str(seed), "--lines", str(lines)],
        check=True,
        capture_output=True,
    )
    return out.stdout


def decode_seeds():
    logs = [p.read_bytes() for p in LOGS] + [generated(300)]
    for log in logs:
        for line in log.splitlines():
            if line.strip():
                put("decode_openziti", line)
    generic = ["{" + HEAD + "," + rest + "}" for rest in GENERIC]
    generic += [
        '{"signal":"read_only","read_only":true,"cluster":"c","reporter":"r"}',
        '{"signal":"read_only","read_only":true,"ts":"2025-03-01T10:00:00Z","reporter":"r"}',
        '{"ts":"2025-03-01T10:00:00Z","cluster":"etcd-a","reporter":"n1","signal":"leader","leader":"n2"}',
    ]
    for line in generic:
        put("decode_generic", line)
    return logs, generic


def ingest_seeds(logs, generic):
    for log in logs:
        put("ingest", log)
        lines = log.splitlines(keepends=True)
        for i in range(0, len(lines), 40):
            put("ingest", b"".join(lines[i : i + 40]))
    put("ingest", "\n".join(generic[:3]) + "\n")
    # Timelines in the generic format: a failover, a split, a terminator spin.
    t = lambda s: f"2025-03-01T10:00:{s:02}Z"
    failover = [
        f'{{"ts":"{t(0)}","cluster":"c","reporter":"n1","signal":"leader","leader":"n1"}}',
        f'{{"ts":"{t(1)}","cluster":"c","reporter":"n2","signal":"leader","leader":"n1"}}',
        f'{{"ts":"{t(5)}","cluster":"c","reporter":"n2","signal":"self_leader","is_leader":true}}',
        f'{{"ts":"{t(5)}","cluster":"c","reporter":"n1","signal":"peer","peer":"n2","connected":false}}',
        f'{{"ts":"{t(9)}","cluster":"c","reporter":"n2","signal":"members","members":["n2","n3"],"index":9}}',
        f'{{"ts":"{t(30)}","cluster":"c","reporter":"n3","signal":"node","node":"n1","online":false}}',
    ]
    put("ingest", "\r\n".join(failover) + "\r\n\n   \n")
    spin = []
    for i in range(8):
        op = "created" if i % 2 == 0 else "deleted"
        spin.append(
            f'{{"ts":"{t(i * 3)}","cluster":"c","reporter":"n1","signal":"entity",'
            f'"entity_type":"terminators","entity_id":"t{i // 2}","op":"{op}",'
            f'"slot":{{"service":"s","router":"r"}}}}'
        )
    put("ingest", "\n".join(spin))


def config_seeds():
    for p in sorted((ROOT / "config").glob("*.toml")):
        put("config", p.read_bytes())
    raw = re.compile(r'r#"(.*?)"#', re.S)
    # Ordinary string literals with a newline in them, escapes and all.
    plain = re.compile(r'"((?:[^"\\\n]|\\.)*\\n(?:[^"\\\n]|\\.)*)"')
    for p in [ROOT / "src" / "config" / "tests.rs", *sorted((ROOT / "tests" / "it").glob("*.rs"))]:
        source = p.read_text()
        texts = raw.findall(source)
        texts += [codecs.decode(t, "unicode_escape") for t in plain.findall(source)]
        for text in texts:
            if "[" in text and "=" in text and not text.lstrip().startswith("{"):
                put("config", text)
    put("config", RUN.format(window="2s", dir="/var/lib/herald", log="/var/log/ziti/events.log"))


RUN = """
[engine]
window = "{window}"
[server]
listen = "127.0.0.1:0"
[state]
dir = "{dir}/state"
[sources.log]
type = "file"
path = "{log}"
cluster = "prod"
[sinks.out]
type = "file"
path = "{dir}/events.jsonl"
[sinks.out.buffer]
type = "disk"
"""


def run_seeds(logs):
    for n, (log, window) in enumerate([(logs[0], "2s"), (logs[1], "0"), (logs[1], "1h"), (logs[2], "2s")]):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "in.jsonl").write_bytes(log)
            config = RUN.format(window=window, dir=d, log=f"{d}/in.jsonl")
            Path(d, "herald.toml").write_text(config)
            daemon = subprocess.Popen(
                [HERALD, "run", "--config", f"{d}/herald.toml"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # The file source reads the log at once; the state is written at each commit and
            # at shutdown.
            time.sleep(3)
            daemon.send_signal(signal.SIGTERM)
            if daemon.wait(timeout=30) != 0:
                sys.exit(f"herald run exited {daemon.returncode} on {config}")
            buffers = Path(d, "state", "buffers")
            for seg in sorted(buffers.rglob("*.seg")):
                data = seg.read_bytes()
                if data:
                    put("segment", data)
                    # A write cut short by a crash, mid-record.
                    put("segment", data[: len(data) * 2 // 3])


def state_seeds():
    put("state_file", (ROOT / "tests" / "data" / "state-v2.bin").read_bytes())
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            ["cargo", "test", "--lib", "-q", "--", "--ignored", "write_entries_fuzz_seeds"],
            cwd=ROOT, env={**os.environ, "HERALD_FUZZ_SEEDS": d}, check=True,
            stdout=subprocess.DEVNULL,
        )
        for seed in sorted(Path(d).iterdir()):
            put("entries", seed.read_bytes())


def main():
    if not os.access(HERALD, os.X_OK):
        sys.exit(f"{HERALD}: not an executable herald; build one (cargo build) or name it")
    logs, generic = decode_seeds()
    ingest_seeds(logs, generic)
    config_seeds()
    run_seeds(logs)
    state_seeds()


if __name__ == "__main__":
    main()
