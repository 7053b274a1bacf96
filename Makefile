# One command per workflow. See README.md.
.PHONY: up down status logs test lint fmt bench compose

up: ## install what is missing, start the local stack and what is not running of the services (also what died); INSTANCES=2: two of every projector; BROKER=nisshi: nisshi as the local Kafka (built once, about 13 min)
	@scripts/stack.sh install
	@scripts/stack.sh start
	@scripts/services.sh start $(if $(INSTANCES),--instances $(INSTANCES))
	@scripts/welcome.sh

down: ## stop everything `make up` started
	@scripts/services.sh stop
	@scripts/stack.sh stop

status: ## what runs and where
	@scripts/stack.sh status
	@scripts/services.sh status
	-@cargo run -q -p factline-cli -- status --output $(or $(OUTPUT),table)

logs: ## follow the logs of every component
	@tail -n 20 -F .dev/logs/*.log

test: ## install what is missing, start the infrastructure the tests need, run every test (BROKER=nisshi: against nisshi)
	@scripts/test.sh

bench: ## throughput and latency of every stage against its own limit; QUICK=1: tiny sizes (CI)
	@QUICK=$(QUICK) scripts/bench.sh

lint: ## formatting and clippy, as CI checks them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

compose: ## regenerate the projector services of docker-compose.yml from the projector registry
	@scripts/compose.sh

fmt:
	cargo fmt --all
