"""The benchmark's floor: the plain kafka-python consumer→producer loop anyone would write first.

    python bench/floor.py --source HOST:PORT --target HOST:PORT --topic T --target-topic T2 [--compression lz4]

Assigns every partition of the source topic, reads from the beginning up to the end offsets seen at start,
and sends each record (key, value, headers, timestamp) to the same partition of the target topic, which
must exist. Client settings are kafka-python's defaults, apart from the producer's compression. Prints
``{"records": N}`` on stdout when every record is acknowledged; exits 1 if any send failed.
"""

from __future__ import annotations

import argparse
import json
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--target-topic", required=True)
    parser.add_argument("--compression", choices=["none", "lz4", "zstd", "gzip"], default="none")
    args = parser.parse_args(argv)

    consumer = KafkaConsumer(bootstrap_servers=args.source, group_id=None, enable_auto_commit=False)
    producer = KafkaProducer(
        bootstrap_servers=args.target, compression_type=None if args.compression == "none" else args.compression
    )
    failures: list[BaseException] = []
    partitions = [TopicPartition(args.topic, p) for p in sorted(consumer.partitions_for_topic(args.topic) or ())]
    if not partitions:
        print(f"floor: topic {args.topic} not found", file=sys.stderr)
        return 1
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    end = consumer.end_offsets(partitions)
    remaining = {tp for tp in partitions if end[tp] > 0}
    copied = 0
    while remaining:
        for tp, records in consumer.poll(timeout_ms=1000).items():
            for record in records:
                if record.offset >= end[tp]:
                    break
                producer.send(
                    args.target_topic, key=record.key, value=record.value, headers=record.headers,
                    partition=tp.partition, timestamp_ms=record.timestamp,
                ).add_errback(failures.append)  # fmt: skip
                copied += 1
            if consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
                consumer.pause(tp)
    producer.flush()
    producer.close()
    consumer.close()
    if failures:
        print(f"floor: {len(failures)} sends failed, first: {failures[0]!r}", file=sys.stderr)
        return 1
    print(json.dumps({"records": copied}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
