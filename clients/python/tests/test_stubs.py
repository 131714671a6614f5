"""The installed stubs are exactly what client/proto produces today: the generated code
cannot drift from the contract the Rust crates are built from."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import cairn.v1
from cairn.proto import pb

PACKAGE = Path(__file__).resolve().parents[1]
PROTO = PACKAGE.parent.parent / "client" / "proto" / "cairn" / "v1" / "cairn.proto"


def load_stubgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stubgen", PACKAGE / "stubgen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("stubgen", module)
    spec.loader.exec_module(module)
    return module


def test_installed_stubs_are_what_the_proto_generates(tmp_path: Path) -> None:
    stubgen = load_stubgen()
    fresh = stubgen.generate(tmp_path, PROTO.parents[2])
    installed = Path(cairn.v1.__file__).resolve().parents[2]
    for path in fresh:
        relative = path.relative_to(tmp_path)
        twin = installed / relative
        assert twin.is_file(), f"{relative} is not installed: reinstall the package"
        assert twin.read_bytes() == path.read_bytes(), (
            f"{relative} differs from what {PROTO} generates: the package was built from "
            "another version of the proto; reinstall it (pip install ./clients/python)"
        )


def test_services_and_messages_are_the_protos() -> None:
    text = PROTO.read_text()
    in_proto: dict[str, set[str]] = {}
    for block in re.findall(r"^service (\w+) \{(.*?)^\}", text, re.M | re.S):
        in_proto[block[0]] = set(re.findall(r"rpc (\w+)\(", block[1]))
    installed = {
        s.name: {m.name for m in s.methods} for s in pb.DESCRIPTOR.services_by_name.values()
    }
    assert installed == in_proto
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(
        re.findall(r"^message (\w+) \{", text, re.M)
    )
