"""The generated stubs of the public contract (client/proto/cairn/v1/cairn.proto).

They are generated while the package is built (setup.py, stubgen.py) and never committed, so
a source checkout that was not installed has none: install it with
``pip install ./clients/python``.
"""

try:
    from cairn.v1 import cairn_pb2 as pb
    from cairn.v1 import cairn_pb2_grpc as pb_grpc
except ImportError as err:  # pragma: no cover - only in an uninstalled checkout
    raise ImportError(
        "cairn's gRPC stubs are missing: they are generated from client/proto when the "
        "package is built; install it with `pip install ./clients/python` "
        f"(the import failed with: {err})"
    ) from err

__all__ = ["pb", "pb_grpc"]
