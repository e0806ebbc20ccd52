"""Print the REST API's OpenAPI document (generated from the descriptor set).

    .venv/bin/python scripts/openapi.py > openapi.json

Run scripts/build_proto.py first; the same document is served by Envoy at /openapi.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from callcontrol.rest.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["openapi", *sys.argv[1:]]))
