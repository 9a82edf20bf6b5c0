#!/usr/bin/env python3
"""Reads every record of a topic with kafka-python (an independent client) and prints one
JSON object per record: partition, offset, key, headers, value. Used by the test suite.

usage: kafka_consume.py BOOTSTRAP TOPIC COUNT TIMEOUT_SECONDS   (COUNT 0: read to the end; -1: print the record count)
"""
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition

bootstrap, topic, want, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
deadline = time.time() + timeout
partitions = None
while partitions is None and time.time() < deadline:
    partitions = consumer.partitions_for_topic(topic)
    if partitions is None:
        time.sleep(0.2)
if not partitions:
    sys.exit("no partitions for %s" % topic)
tps = [TopicPartition(topic, p) for p in sorted(partitions)]
consumer.assign(tps)
consumer.seek_to_beginning(*tps)
if want < 0:
    # COUNT -1: only how many records there are (the sum of the end offsets).
    print(sum(consumer.end_offsets(tps).values()))
    sys.exit(0)
# COUNT 0: every record there is now (up to the end offsets), duplicates included.
ends = consumer.end_offsets(tps) if want == 0 else None
def done():
    if ends is not None:
        return all(consumer.position(tp) >= ends[tp] for tp in tps)
    return seen >= want
seen = 0
idle_since = time.time()
# With COUNT 0, records past the reported end offsets are read too, until 5 s bring nothing.
while (not done() or (ends is not None and time.time() - idle_since < 5)) and time.time() < deadline:
    before = seen
    for tp, records in consumer.poll(timeout_ms=200).items():
        for r in records:
            print(json.dumps({
                "partition": r.partition,
                "offset": r.offset,
                "key": r.key.decode() if r.key is not None else None,
                "headers": {k: v.decode() for k, v in (r.headers or [])},
                "value": json.loads(r.value),
            }))
            seen += 1
    if seen > before:
        idle_since = time.time()
sys.stdout.flush()
