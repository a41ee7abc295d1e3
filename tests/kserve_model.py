"""Load InferenceService documents into the `kserve` SDK's V1beta1InferenceService, strictly.

Run as a subprocess by tests/test_kubernetes.py (JSON list of documents on stdin; exit 1 with
the first problem on stderr): `import kserve` registers KServe's gRPC protos under the package
`inference`, the very names tritonclient registers, so both cannot load in one test process.
"""

from __future__ import annotations

import json
import re
import sys

PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object}


def load_model(data, klass: str, where: str = "$"):
    """Build the SDK object `klass` from `data`, failing on any key the model lacks or a wrong type
    (the SDK's own deserializer drops unknown keys silently and knows no Kubernetes types)."""
    import kserve.models
    import kubernetes.client.models

    if m := re.fullmatch(r"[lL]ist\[(.*)\]", klass):
        assert isinstance(data, list), (where, klass)
        return [load_model(item, m.group(1), f"{where}[{i}]") for i, item in enumerate(data)]
    if m := re.fullmatch(r"dict\(str, (.*)\)|Dict\[str, (.*)\]", klass):
        assert isinstance(data, dict), (where, klass)
        return {k: load_model(v, m.group(1) or m.group(2), f"{where}.{k}") for k, v in data.items()}
    if klass in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[klass]), (where, klass, data)
        return data
    cls = getattr(kserve.models, klass, None) or getattr(kubernetes.client.models, klass)
    assert isinstance(data, dict), (where, klass)
    unknown = set(data) - set(cls.attribute_map.values())
    assert not unknown, f"{where}: {klass} has no field {sorted(unknown)}"
    return cls(**{attr: load_model(data[key], cls.openapi_types[attr], f"{where}.{key}")
                  for attr, key in cls.attribute_map.items() if key in data})


def check(document: dict) -> None:
    """Loads into V1beta1InferenceService and serializes back to the same document."""
    from kserve import ApiClient

    service = load_model(document, "V1beta1InferenceService")
    assert type(service).__name__ == "V1beta1InferenceService"
    back = ApiClient().sanitize_for_serialization(service)
    assert back["spec"]["predictor"]["model"].pop("name") == ""  # the model's default, not ours
    assert back == document, (back, document)


if __name__ == "__main__":
    documents = json.load(sys.stdin)
    for document in documents:
        check(document)
    print(f"{len(documents)} InferenceService(s) loaded into V1beta1InferenceService")
