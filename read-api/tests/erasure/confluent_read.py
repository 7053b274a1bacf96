"""Reads topics from their beginning with Confluent's own Python client, as an outside user would.

Usage: confluent_read.py BOOTSTRAP REGISTRY_URL TOPIC...

Every record of every partition, up to the high watermark seen at start, is printed as one JSON
line: topic, partition, offset, the key, the value as Confluent's AvroDeserializer decodes it
(fetching the writer's schema from the registry by the id in the Confluent wire format) or, when
it does not decode (a dead letter that was never valid Avro), the raw bytes as text, and the
headers as text. The test that runs it searches those lines for personal data in clear.
"""

import json
import sys
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def text(data):
    return None if data is None else data.decode("utf-8", errors="replace")


def main():
    bootstrap, registry_url, topics = sys.argv[1], sys.argv[2], sys.argv[3:]
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"confluent-read-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=30)
        ends = {}
        assignment = []
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=30
            )
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
        if not assignment:
            continue
        consumer.assign(assignment)
        while ends:
            message = consumer.poll(30)
            if message is None:
                sys.exit(f"{topic}: no record within 30 s, {ends} not reached")
            if message.error():
                sys.exit(f"{topic}: {message.error()}")
            record = {
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
                "key": text(message.key()),
                "headers": {k: text(v) for k, v in (message.headers() or [])},
            }
            try:
                context = SerializationContext(message.topic(), MessageField.VALUE)
                record["value"] = deserializer(message.value(), context)
                record["decoded"] = True
            except Exception as error:  # a dead letter may be any bytes at all
                record["value"] = text(message.value())
                record["decoded"] = False
                record["error"] = str(error)
            print(json.dumps(record, default=str), flush=True)
            if ends.get(message.partition()) == message.offset() + 1:
                del ends[message.partition()]
        consumer.unassign()
    consumer.close()


if __name__ == "__main__":
    main()
