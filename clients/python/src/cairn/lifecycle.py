"""Stream lifecycle types: a stream's metadata (retention limits and the application's own
JSON) and where the stream stands (client/src/client/lifecycle.rs is the Rust side)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from cairn.errors import InternalError, InvalidInput
from cairn.events import u64
from cairn.proto import pb


@dataclass(frozen=True)
class StreamMetadata:
    """A stream's retention limits and custom metadata; ``None`` is no limit. The server
    judges the bounds (``max_count`` 1..=2**40, ``max_age_seconds`` up to 100 years,
    ``custom`` a JSON object of at most 16 KiB) and answers :class:`~cairn.InvalidInput`."""

    #: Keep only the last this many events.
    max_count: Optional[int] = None
    #: Hide events older than this many seconds (on the cluster's committed clock).
    max_age_seconds: Optional[int] = None
    #: Hide revisions below this one.
    truncate_before: Optional[int] = None
    #: The application's own metadata: a JSON object (a ``dict``).
    custom: Optional[dict[str, Any]] = None

    def to_proto(self) -> pb.StreamMetadata:
        metadata = pb.StreamMetadata()
        for field in ("max_count", "max_age_seconds", "truncate_before"):
            value = getattr(self, field)
            if value is not None:
                setattr(metadata, field, u64(field, value))
        if self.custom is not None:
            if not isinstance(self.custom, dict):
                raise InvalidInput("custom: must be a dict (a JSON object)")
            try:
                metadata.custom_json = json.dumps(self.custom, separators=(",", ":"))
            except (TypeError, ValueError) as err:
                raise InvalidInput(f"custom: not JSON: {err}") from err
        return metadata

    @staticmethod
    def from_proto(metadata: pb.StreamMetadata) -> StreamMetadata:
        def optional(field: str) -> Optional[int]:
            return getattr(metadata, field) if metadata.HasField(field) else None

        custom = None
        if metadata.HasField("custom_json"):
            try:
                custom = json.loads(metadata.custom_json)
            except ValueError as err:
                raise InternalError(f"stream metadata: custom_json is not JSON: {err}") from err
        return StreamMetadata(
            optional("max_count"), optional("max_age_seconds"), optional("truncate_before"),
            custom,
        )


@dataclass(frozen=True)
class StreamMetadataState:
    """A stream's metadata as stored, and where the stream stands."""

    metadata: StreamMetadata
    #: The metadata's revision: the expected revision of the next change (``None``: never set).
    revision: Optional[int]
    #: Soft-deleted and not written since.
    deleted: bool
    #: Tombstoned: never to be written again.
    tombstoned: bool

    @staticmethod
    def from_proto(response: pb.GetStreamMetadataResponse) -> StreamMetadataState:
        return StreamMetadataState(
            StreamMetadata.from_proto(response.metadata),
            response.revision if response.HasField("revision") else None,
            response.deleted,
            response.tombstoned,
        )
