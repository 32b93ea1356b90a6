"""Regenerate the committed gRPC stubs: `python -m nba_service.codegen`.

The stubs (and their .pyi) live in nba_service/_proto; CI regenerates them and fails on a diff.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "nba_service" / "_proto"
PROTO = ROOT / "proto"
# protoc writes absolute imports (`from nba.v1 import x_pb2`); the stubs live in our package.
_IMPORT = re.compile(r"^from nba\.v1 import (\S+) as", re.MULTILINE)


def main() -> int:
    from grpc_tools import protoc

    try:
        import grpc_tools

        include = Path(grpc_tools.__file__).parent / "_proto"
    except ImportError:  # pragma: no cover - grpc_tools ships it
        return 1
    shutil.rmtree(OUT / "nba", ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *files,
        ]
    )
    if rc != 0:
        return int(rc)
    for py in (OUT / "nba").rglob("*.py"):
        text = py.read_text()
        py.write_text(_IMPORT.sub(r"from nba_service._proto.nba.v1 import \1 as", text))
    for pkg in (OUT, OUT / "nba", OUT / "nba" / "v1"):
        (pkg / "__init__.py").touch()
    print(f"generated {len(files)} proto file(s) into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
