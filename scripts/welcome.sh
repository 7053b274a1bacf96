#!/usr/bin/env bash
# Printed at the end of `make up`: where everything runs and a copy-paste example.
eval "$("$(dirname "${BASH_SOURCE[0]}")/stack.sh" env)"
W="${WRITE_SIDE_ADDR:-127.0.0.1:8080}"
R="${READ_API_ADDR:-127.0.0.1:8090}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# each projector and the port services.sh gave it (scripts/services.sh status has them all)
PROJECTORS="$("$ROOT/scripts/services.sh" status 2>/dev/null | awk '$1 != "write-side" && $1 != "read-api" && $1 !~ /-[0-9]+$/ { sub("http://127.0.0.1", "", $4); printf "%s %s, ", $1, $4 }')"
cat <<TXT

factline is up.
  write side        http://$W   (/healthz /readyz /metrics /openapi.json)
  read API          http://$R   (/orders/{id} /customers/{id} /search/orders /events /projections)
  web console       http://$R/console   (events, timelines, projections, read models)
  projectors        /metrics and /healthz on 127.0.0.1: ${PROJECTORS%, }
  schema registry   $SCHEMA_REGISTRY_URL
  Kafka             $KAFKA_BROKERS
  Elasticsearch     $ELASTICSEARCH_URL
  PostgreSQL        $DATABASE_URL
  logs              .dev/logs/   (make logs)     stop: make down

Register a customer and place an order (the answer carries the order's position in the log):

  curl -s -XPOST $W/commands/RegisterCustomer -H 'Content-Type: application/json' \\
    -d '{"customer_id": "c-1", "email": "ada@example.com", "name": "Ada Lovelace"}'
  POSITION=\$(curl -s -XPOST $W/commands/PlaceOrder -H 'Content-Type: application/json' \\
    -d '{"order_id": "o-1", "customer_id": "c-1", "currency": "EUR",
         "items": [{"sku": "tea-01", "name": "Earl Grey tea", "quantity": 2, "unit_price_cents": 450}],
         "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}}' \\
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["position"])')

Read the order back, waiting until the read model reflects that write (freshness in the headers):

  curl -si "$R/orders/o-1?consistent_with=\$POSITION"

Search, browse the events, see the projectors:

  curl -s "$R/search/orders?q=earl+grey"
  curl -s "$R/events?type=OrderPlaced"
  curl -s "$R/projections"

The operator's CLI (README: "Operator's guide"):

  cargo run -q -p factline-cli -- status
  cargo run -q -p factline-cli -- events search --key o-1
TXT
