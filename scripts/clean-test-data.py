#!/usr/bin/env python3
"""Deletes the Kafka topics and Elasticsearch indices that earlier test runs left behind.

Every test names its topics and indices with a random prefix of its own (factline-testkit:
`t-{12 hex}-`, `t{12 hex}_`, `t{8 hex}_`, `t-topics-{32 hex}-`), and most tests do not delete
them (one `make test` leaves about 550 topics). On the local broker (noida-db) that matters:
it snapshots its whole state while it is being written to, so a state that only grows costs
more in every later write-heavy test and bench stage. Deleting keeps the count of topics and
indices down; it does not shrink a snapshot already grown large (a fresh data directory
does). `scripts/test.sh` runs this before the tests start, unless another `make test` is
running (it holds `.dev/run/test.lock`).

Only names of those shapes are deleted; the topics and indices `make up` uses (`orders`,
`customers.dlq`, `order_search_v1`, ...), the bench's (it deletes its own) and anything else
are left alone.

    KAFKA_BROKERS=127.0.0.1:9092 ELASTICSEARCH_URL=http://127.0.0.1:9200 \\
        .dev/venv/bin/python scripts/clean-test-data.py
"""

import json
import os
import re
import sys
import urllib.request

from confluent_kafka.admin import AdminClient

LEFTOVER = re.compile(r"^(t-[0-9a-f]{12}-|t[0-9a-f]{12}_|t[0-9a-f]{8}_|t-topics-[0-9a-f]{32}-)")
BATCH = 200


def topics(brokers):
    admin = AdminClient({"bootstrap.servers": brokers})
    names = [
        name
        for name in admin.list_topics(timeout=30).topics
        if LEFTOVER.match(name) and not name.startswith("__")
    ]
    for start in range(0, len(names), BATCH):
        futures = admin.delete_topics(names[start : start + BATCH], operation_timeout=30)
        for name, future in futures.items():
            try:
                future.result()
            except Exception as error:  # a topic deleted meanwhile is fine
                print(f"[clean] topic {name}: {error}", file=sys.stderr)
    return len(names)


def indices(url):
    with urllib.request.urlopen(f"{url}/_cat/indices?format=json&h=index", timeout=30) as answer:
        names = [row["index"] for row in json.load(answer) if LEFTOVER.match(row["index"])]
    # Elasticsearch refuses wildcard deletes by default: delete by name, a few at a time
    for start in range(0, len(names), 50):
        request = urllib.request.Request(
            f"{url}/{','.join(names[start : start + 50])}?ignore_unavailable=true",
            method="DELETE",
        )
        urllib.request.urlopen(request, timeout=60).read()
    return len(names)


def main():
    brokers = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
    url = os.environ.get("ELASTICSEARCH_URL", "http://127.0.0.1:9200").rstrip("/")
    deleted_topics = topics(brokers)
    deleted_indices = indices(url)
    print(f"[clean] deleted {deleted_topics} leftover test topics and {deleted_indices} indices")


if __name__ == "__main__":
    main()
