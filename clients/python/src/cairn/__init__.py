"""Cairn's Python client: append, read and follow streams of a Cairn cluster.

``cairn.Client`` blocks; ``cairn.AsyncClient`` is the same client for asyncio. Both find and
follow the leader, retry appends with the same event ids (so a retry never writes twice),
and resubscribe on another node, from where delivery stopped, when a node is lost::

    import cairn

    with cairn.Client() as client:   # endpoints: CAIRN_ENDPOINTS, the cairn dev profile, ...
        client.append("order-42", cairn.EventData.json("OrderPlaced", {"total": 10}),
                      expected=cairn.NO_STREAM)
        for event in client.read_stream("order-42"):
            print(event.revision, event.type, event.json())
"""

from cairn.aio import DEFAULT_REQUEST_TIMEOUT_MS, MEMBERSHIP_REQUEST_TIMEOUT_MS, AsyncClient
from cairn.cluster import ClusterStatus, Member, Membership, Role
from cairn.endpoints import MAX_ENDPOINTS, MAX_MESSAGE_BYTES
from cairn.dcb import (
    DCB_STREAM,
    MAX_QUERY_ITEM_VALUES,
    MAX_QUERY_ITEMS,
    AppendCondition,
    MultiAppendResult,
    Query,
    QueryItem,
    StreamAppend,
)
from cairn.errors import (
    CairnError,
    ConditionFailed,
    EventIdReused,
    GroupExists,
    GroupFull,
    GroupNotFound,
    IdempotencyConflict,
    InternalError,
    InvalidInput,
    NotAuthenticated,
    PermissionDenied,
    ResourceExhausted,
    StreamDeleted,
    StreamNotFound,
    Unavailable,
    WrongExpectedVersion,
)
from cairn.events import (
    ALL_STREAM,
    ANY,
    MAX_TAGS_PER_EVENT,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ContentType,
    EventData,
    ExpectedRevision,
    RecordedEvent,
    StreamState,
    category_index,
    event_type_index,
    parse_expected,
    tag_index,
    uuid7,
)
from cairn.groups import (
    CONSUMER_CLOSE_TIMEOUT_S,
    CONSUMER_RECONNECT_ATTEMPTS,
    AckRejected,
    AsyncConsumer,
    GroupConsumer,
    GroupEvent,
    GroupInfo,
    GroupSettings,
    GroupStrategy,
    GroupUpdate,
    NackAction,
)
from cairn.lifecycle import StreamMetadata, StreamMetadataState
from cairn.options import (
    Direction,
    From,
    NodePreference,
    ReadConsistency,
    ReadFrom,
    SubscriptionFilter,
)
from cairn.policy import (
    DEFAULT_MAX_APPEND_ATTEMPTS,
    MAX_RESUBSCRIBE_ATTEMPTS,
    RETRY_BACKOFF_INITIAL_MS,
    RETRY_BACKOFF_MAX_MS,
)
from cairn.profile import (
    DEFAULT_ENDPOINT,
    read_profile,
    resolve_endpoints,
    resolve_tls_ca,
    resolve_token,
)
from cairn.reads import AsyncReadStream
from cairn.subscription import (
    AsyncSubscription,
    CaughtUp,
    Checkpoint,
    FellBehind,
    SubscriptionMessage,
)
from cairn.sync import Client, Consumer, ReadStream, Subscription

__all__ = [
    "DCB_STREAM", "MAX_QUERY_ITEMS", "MAX_QUERY_ITEM_VALUES", "MAX_TAGS_PER_EVENT",
    "AppendCondition", "ConditionFailed", "MultiAppendResult", "Query", "QueryItem",
    "StreamAppend", "StreamMetadata", "StreamMetadataState", "category_index",
    "event_type_index", "tag_index",
    "ALL_STREAM", "ANY", "NO_STREAM", "STREAM_EXISTS", "DEFAULT_ENDPOINT",
    "DEFAULT_MAX_APPEND_ATTEMPTS", "DEFAULT_REQUEST_TIMEOUT_MS", "MAX_ENDPOINTS",
    "MAX_MESSAGE_BYTES", "MAX_RESUBSCRIBE_ATTEMPTS", "MEMBERSHIP_REQUEST_TIMEOUT_MS",
    "RETRY_BACKOFF_INITIAL_MS", "RETRY_BACKOFF_MAX_MS",
    "AppendResult", "AsyncClient", "AsyncReadStream", "AsyncSubscription", "CairnError",
    "CaughtUp", "Checkpoint", "Client", "ClusterStatus", "ContentType", "Direction",
    "EventData", "EventIdReused", "ExpectedRevision", "FellBehind", "From",
    "IdempotencyConflict", "InternalError", "InvalidInput", "Member", "Membership",
    "NodePreference", "NotAuthenticated", "PermissionDenied", "ReadConsistency", "ReadFrom",
    "ReadStream", "RecordedEvent", "Role",
    "StreamDeleted", "StreamNotFound", "StreamState", "Subscription", "SubscriptionFilter",
    "SubscriptionMessage", "Unavailable", "WrongExpectedVersion", "parse_expected",
    "read_profile", "resolve_endpoints", "resolve_tls_ca", "resolve_token", "uuid7",
    "CONSUMER_CLOSE_TIMEOUT_S", "CONSUMER_RECONNECT_ATTEMPTS", "AckRejected", "AsyncConsumer",
    "Consumer", "GroupConsumer", "GroupEvent", "GroupExists", "GroupFull", "GroupInfo",
    "GroupNotFound", "GroupSettings", "GroupStrategy", "GroupUpdate", "NackAction",
    "ResourceExhausted",
]
