#!/usr/bin/env bash
# Printed at the end of `make up`: where everything runs and a copy-paste example.
eval "$("$(dirname "${BASH_SOURCE[0]}")/stack.sh" env)"
cat <<TXT

factline is up.
  write side        http://${WRITE_SIDE_ADDR:-127.0.0.1:8080}   (/healthz /readyz /metrics /openapi.json)
  projectors        order-summary http://127.0.0.1:9101/metrics, customer-stats http://127.0.0.1:9102/metrics
  schema registry   $SCHEMA_REGISTRY_URL
  Kafka             $KAFKA_BROKERS
  Elasticsearch     $ELASTICSEARCH_URL
  PostgreSQL        $DATABASE_URL
  logs              .dev/logs/   (make logs)     stop: make down

Register a customer and place an order:

  curl -s -XPOST localhost:8080/commands/RegisterCustomer -H 'Content-Type: application/json' \\
    -d '{"customer_id": "c-1", "email": "ada@example.com", "name": "Ada Lovelace"}'
  curl -s -XPOST localhost:8080/commands/PlaceOrder -H 'Content-Type: application/json' \\
    -d '{"order_id": "o-1", "customer_id": "c-1", "currency": "EUR",
         "items": [{"sku": "tea-01", "name": "Earl Grey tea", "quantity": 2, "unit_price_cents": 450}],
         "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}}'

Read the order back (the read API is not built yet; this reads its read model directly):

  psql "$DATABASE_URL" -c "SELECT * FROM order_summary WHERE order_id = 'o-1'"
TXT
