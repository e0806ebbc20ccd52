"""build/proto-bundle is enough, alone, for a code generator in any language."""

from __future__ import annotations

import subprocess
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "build" / "proto-bundle"


def test_the_bundle_compiles_with_no_other_include_path(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(BUNDLE)) for p in BUNDLE.rglob("*.proto"))
    assert {"google/api/annotations.proto", "google/api/http.proto"} <= set(protos)
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto", "google/rpc/code.proto"} <= set(
        protos
    )
    # protoc.main adds no include of its own: only the bundle is searched.
    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{BUNDLE}", f"--descriptor_set_out={out}", *protos]) == 0
    assert out.stat().st_size > 0


def test_the_protoset_has_every_file_and_the_comments() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString((BUNDLE / "callcontrol.protoset").read_bytes()).file
    names = {f.name for f in files}
    on_disk = {str(p.relative_to(BUNDLE)) for p in BUNDLE.rglob("*.proto")}
    assert names == on_disk
    commands = next(f for f in files if f.name == "callcontrol/v1/commands.proto")
    assert any(
        "Answer an incoming call" in loc.leading_comments for loc in commands.source_code_info.location
    )


def test_the_bundle_is_generated_not_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(BUNDLE / "callcontrol.protoset")], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0
