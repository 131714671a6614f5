"""Generates the gRPC stubs of Cairn's public contract (client/proto) with grpcio-tools.

The one generator: setup.py runs it while the package is built, and the tests run it again
to check that the installed stubs are exactly what the proto produces today. The proto's
package, ``cairn.v1``, lands inside this package as the module ``cairn.v1``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

#: The contract, relative to the proto root (the root is client/proto; proto/ here links to it).
PROTO_FILES = ("cairn/v1/cairn.proto",)
#: What the generator writes for each proto file, next to it under the output directory.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def default_proto_root() -> Path:
    """client/proto, through the link beside this file (also present in an sdist)."""
    return Path(__file__).resolve().parent / "proto"


def generated_files(out_dir: Path) -> list[Path]:
    """Every file :func:`generate` writes into ``out_dir``."""
    files = []
    for proto in PROTO_FILES:
        stem = proto[: -len(".proto")]
        files.extend(out_dir / f"{stem}{suffix}" for suffix in GENERATED_SUFFIXES)
        files.append(out_dir / Path(proto).parent / "__init__.py")
    return files


def generate(out_dir: Path, proto_root: Path | None = None) -> list[Path]:
    """Writes the stubs of :data:`PROTO_FILES` into ``out_dir`` and returns their paths.

    Raises ``RuntimeError`` naming the proto when grpcio-tools refuses it.
    """
    from grpc_tools import protoc  # a build (and test) dependency, not a runtime one

    root = proto_root or default_proto_root()
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in PROTO_FILES:
        if not (root / proto).is_file():
            raise RuntimeError(f"{root / proto}: not found (the proto root is client/proto)")
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{well_known}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                proto,
            ]
        )
        if status != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {root / proto} (status {status})")
        package = out_dir / Path(proto).parent
        (package / "__init__.py").write_text(
            '"""Generated from client/proto when the package was built; do not edit."""\n'
        )
    return generated_files(out_dir)
