"""Validates a docker-compose file against the Compose Specification's JSON
schema (draft-07). Usage: validate_compose.py SCHEMA COMPOSE_FILE

Prints one line per error and exits 1 when there is any; exits 2 when a
needed Python package is missing.
"""

import json
import sys

try:
    import jsonschema
    import yaml
except ImportError as missing:
    print(f"missing Python package: {missing.name} (run scripts/install-deps.sh)", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    schema_path, compose_path = sys.argv[1], sys.argv[2]
    with open(schema_path, encoding="utf-8") as schema_file:
        schema = json.load(schema_file)
    with open(compose_path, encoding="utf-8") as compose_file:
        document = yaml.safe_load(compose_file)
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
    for error in errors:
        location = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        print(f"{compose_path}: {location}: {error.message}")
    if not errors:
        print(f"{compose_path}: valid against {schema_path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
