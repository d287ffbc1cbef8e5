#!/usr/bin/env python3
"""Validate CycloneDX JSON files against the official schema of their specVersion.

Uses PyPI's cyclonedx-python-lib (its strict JSON validator and bundled schemas), so pallet's
CycloneDX output is checked by a validator that is not pallet's own. Exit 0: all valid; 1: a
file is invalid (the errors are printed); 3: the library is not installed.
"""
import json
import sys

try:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
except ImportError:
    print("cyclonedx-python-lib is not installed (pip install 'cyclonedx-python-lib[json-validation]')")
    sys.exit(3)

VERSIONS = {"1.4": SchemaVersion.V1_4, "1.5": SchemaVersion.V1_5, "1.6": SchemaVersion.V1_6}
bad = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    version = json.loads(text).get("specVersion", "")
    if version not in VERSIONS:
        print(f"{path}: unknown specVersion {version!r}")
        bad = 1
        continue
    errors = JsonStrictValidator(VERSIONS[version]).validate_str(text, all_errors=True)
    if errors:
        bad = 1
        # With all_errors the validator returns an iterable of errors (or one error).
        for e in errors if not hasattr(errors, "data") else [errors]:
            print(f"{path}: {getattr(e, 'data', e)}")
    else:
        print(f"{path}: valid CycloneDX {version}")
sys.exit(bad)
