"""Turn CustomResourceDefinitions into the small JSON schemas the deploy tests use.

    python tests/deploy/schemas/trim_crds.py CRD.yaml [CRD.yaml ...]

Writes ``<group>_<kind>_<version>.json`` (the served storage version's
openAPIV3Schema) beside this file, without descriptions and CEL rules, and with the
subtrees listed in OPAQUE (pod-template overrides, affinity: large and not used
here) replaced by free-form objects. The result validates what these manifests use
at the operators' own field names and types, at a fraction of the size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

FREE_FORM: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

# kind -> property paths under the schema root to keep as free-form objects.
OPAQUE: dict[str, list[tuple[str, ...]]] = {
    "RabbitmqCluster": [("spec", "override"), ("spec", "affinity")],
}

DROP = {"description", "x-kubernetes-validations"}


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in DROP}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def replace(schema: dict[str, Any], path: tuple[str, ...]) -> None:
    node = schema
    for part in path[:-1]:
        node = node["properties"][part]
    node["properties"][path[-1]] = dict(FREE_FORM)


def trim(crd: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = strip(version["schema"]["openAPIV3Schema"])
    for path in OPAQUE.get(kind, []):
        replace(schema, path)
    return f"{group}_{kind}_{version['name']}.json", schema


def main(paths: list[str]) -> None:
    for path in paths:
        for crd in yaml.safe_load_all(Path(path).read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            name, schema = trim(crd)
            (HERE / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(name)


if __name__ == "__main__":
    main(sys.argv[1:])
