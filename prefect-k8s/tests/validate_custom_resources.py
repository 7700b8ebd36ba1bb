"""Validates custom resources (a YAML stream) against the openAPIV3Schema of
their CustomResourceDefinitions, strictly: a field the schema does not name
is an error, as `kubectl apply --validate=strict` reports it.

Usage: validate_custom_resources.py CRD_DIR MANIFESTS

Every object in MANIFESTS must be of a kind and version some CRD in CRD_DIR
serves. Prints one line per error and exits 1 when there is any; prints
"<kind>/<name> passed" per valid object; exits 2 when a needed Python package
is missing.
"""

import copy
import pathlib
import sys

try:
    import jsonschema
    import yaml
except ImportError as missing:
    print(f"missing Python package: {missing.name} (run scripts/install-deps.sh)", file=sys.stderr)
    sys.exit(2)


def strict(schema):
    """The schema with unknown fields refused wherever it lists the known ones."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def served_schemas(crd_dir):
    """(apiVersion, kind) -> strict schema, for every served version."""
    schemas = {}
    for path in sorted(pathlib.Path(crd_dir).glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def main() -> int:
    crd_dir, manifests = sys.argv[1], sys.argv[2]
    schemas = served_schemas(crd_dir)
    errors = 0
    with open(manifests, encoding="utf-8") as stream:
        objects = [o for o in yaml.safe_load_all(stream) if o]
    for obj in objects:
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        schema = schemas.get((obj.get("apiVersion"), obj.get("kind")))
        if schema is None:
            print(f"{label}: no CustomResourceDefinition in {crd_dir} serves {obj.get('apiVersion')}")
            errors += 1
            continue
        validator = jsonschema.Draft4Validator(schema)
        found = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        for error in found:
            location = "/".join(str(part) for part in error.absolute_path) or "(top level)"
            print(f"{label}: {location}: {error.message}")
        errors += len(found)
        if not found:
            print(f"{label} passed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
