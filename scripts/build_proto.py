"""Build the Python stubs and the Envoy descriptor set from proto/.

Stubs land in server/callcontrol/v1/ (the proto package callcontrol.v1 is the
Python package callcontrol.v1), with mypy stubs beside them; the descriptor set
(with imports, for Envoy's transcoder) is server/callcontrol/v1/api_descriptor.pb.

For clients in other languages, build/proto-bundle/ gets every .proto file a
code generator needs (ours plus the google/api, google/rpc and google/protobuf
files they import, copied from the pinned packages) and callcontrol.protoset,
a descriptor set with imports and comments. Nothing generated is committed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "server"
PACKAGE = OUT / "callcontrol" / "v1"
DESCRIPTOR = PACKAGE / "api_descriptor.pb"
BUNDLE = ROOT / "build" / "proto-bundle"
BUNDLE_PROTOSET = BUNDLE / "callcontrol.protoset"
# Imported by nothing of ours but named by our error details: clients want them.
RPC_EXTRAS = ("google/rpc/error_details.proto", "google/rpc/status.proto", "google/rpc/code.proto")


def _includes() -> list[str]:
    # googleapis-common-protos ships google/api/*.proto beside its modules;
    # grpc_tools ships google/protobuf/*.proto.
    import google.api.annotations_pb2 as annotations

    googleapis = Path(annotations.__file__).resolve().parent.parent.parent
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [f"-I{PROTO}", f"-I{googleapis}", f"-I{well_known}"]


def _bundle(sources: list[str]) -> int:
    """Write build/proto-bundle/: the protoset and the closure of .proto files it names."""
    from google.protobuf import descriptor_pb2

    if BUNDLE.exists():
        shutil.rmtree(BUNDLE)
    BUNDLE.mkdir(parents=True)
    _run(
        [
            *_includes(),
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={BUNDLE_PROTOSET}",
            *sources,
            *RPC_EXTRAS,
        ]
    )
    roots = [Path(arg[2:]) for arg in _includes()]
    names = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(BUNDLE_PROTOSET.read_bytes()).file]
    for name in names:
        source = next((root / name for root in roots if (root / name).is_file()), None)
        if source is None:
            raise SystemExit(f"proto bundle: {name} is in the descriptor set but in no include path")
        (BUNDLE / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, BUNDLE / name)
    return len(names)


def _plugins() -> list[str]:
    # mypy-protobuf's plugins are console scripts beside this interpreter.
    bindir = Path(sys.executable).parent
    return [
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
    ]


def _run(args: list[str]) -> None:
    # protoc runs in this process and its plugins inherit file descriptor 2;
    # mypy-protobuf writes a "Writing mypy to ..." line per file there. Keep
    # that chatter (fd 2, not just sys.stderr) and show it only on failure.
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as chatter:
        os.dup2(chatter.fileno(), 2)
        try:
            code = protoc.main(["protoc", *args])
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if code != 0:
            chatter.seek(0)
            sys.stderr.write(chatter.read().decode(errors="replace"))
            raise SystemExit(f"protoc failed ({code}): {' '.join(args)}")


def main() -> None:
    sources = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "callcontrol").rglob("*.proto"))
    if not sources:
        raise SystemExit("no .proto files under proto/callcontrol")
    PACKAGE.mkdir(parents=True, exist_ok=True)
    # Stubs only for our own files: passing google/* here would write a
    # google/ folder that shadows the installed package.
    _run(
        [
            *_includes(),
            *_plugins(),
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            f"--mypy_out={OUT}",
            f"--mypy_grpc_out={OUT}",
            *sources,
        ]
    )
    # error_details.proto must be in the set for Envoy to print rpc details.
    _run(
        [
            *_includes(),
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={DESCRIPTOR}",
            *sources,
            "google/rpc/error_details.proto",
            "google/rpc/status.proto",
        ]
    )
    count = _bundle(sources)
    (PACKAGE / "__init__.py").write_text(
        '"""Generated from proto/callcontrol/v1 by scripts/build_proto.py."""\n'
    )
    print(
        f"generated {len(sources)} proto files into {PACKAGE.relative_to(ROOT)}"
        f" and a bundle for other languages ({count} files) in {BUNDLE.relative_to(ROOT)}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
