#!/usr/bin/env python3
"""Checks that no Docker engine is needed for, run by `make test`:

1. docker-compose.yml validates against the Compose specification's JSON schema
   (the subset of scripts/compose-spec.json that this project uses, with the official
   schema's `additionalProperties: false` on the top level, services and healthchecks);
2. the project's rules: ports bound to 127.0.0.1, pinned images, a healthcheck on every
   long-running service, `depends_on` with conditions;
3. README.md's test command and .ci/run agree (both `make test`).
Exits 1 with every problem listed.
"""
import json
import pathlib
import re
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
problems = []

compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
schema = json.loads((ROOT / "scripts" / "compose-spec.json").read_text())
for error in jsonschema.Draft7Validator(schema).iter_errors(compose):
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    problems.append(f"docker-compose.yml {where}: {error.message}")

one_shot = {"init"}
for name, service in (compose.get("services") or {}).items():
    image = service.get("image", "")
    if image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        problems.append(f"service {name}: image '{image}' is not pinned to a version")
    for port in service.get("ports", []):
        if not str(port).startswith("127.0.0.1:"):
            problems.append(f"service {name}: port '{port}' is not bound to 127.0.0.1")
    if name not in one_shot and "healthcheck" not in service:
        problems.append(f"service {name}: no healthcheck")
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        problems.append(f"service {name}: depends_on without conditions")
    else:
        for dep, spec in depends.items():
            if "condition" not in (spec or {}):
                problems.append(f"service {name}: depends_on {dep} has no condition")
            if dep not in compose["services"]:
                problems.append(f"service {name}: depends_on unknown service {dep}")

readme = (ROOT / "README.md").read_text()
blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
readme_test = [line.split("#")[0].strip() for b in blocks for line in b.splitlines() if line.startswith("make test")]
ci = (ROOT / ".ci" / "run").read_text()
ci_commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
if not readme_test:
    problems.append("README.md: no `make test` line in a ```sh block (the test command)")
elif readme_test[0] not in ci_commands:
    problems.append(f"README.md's test command '{readme_test[0]}' is not what .ci/run runs: {ci_commands}")

if problems:
    print("compose/README check failed:", *problems, sep="\n  ")
    sys.exit(1)
print("compose: ok; README test command and .ci/run agree")
