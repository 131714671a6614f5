"""Cairn as the store of Python's ``eventsourcing`` library: its infrastructure factory and
aggregate, application, tracking and process recorders (``pip install ./clients/python
[eventsourcing]``). Select it the way the library's other persistence modules are selected::

    PERSISTENCE_MODULE=cairn.eventsourcing
    CAIRN_ENDPOINTS=http://127.0.0.1:2113,http://127.0.0.1:2114,http://127.0.0.1:2115

(``<APP NAME>_CAIRN_ENDPOINTS`` for one application; without endpoints, the client finds
them as the ``cairn`` command does: ``CAIRN_PROFILE``, then ``./cairn-data``'s profile).

The mapping, and why (clients/python/DESIGN.md says more):

- An aggregate's events are the stream named by its originator id; an event's revision is
  its version minus the version of the stream's first event (kept in every event's
  metadata), so the optimistic-concurrency check is the server's expected revision.
- One ``insert_events`` call (one ``save()``, several aggregates) is one multi-stream
  append: all or nothing. A process recorder adds the tracking record to the same append,
  as an event of the tracking stream of (this application, the upstream application),
  with its expected revision: a process event and its tracking position land together or
  not at all, and a position is never recorded twice.
- The application's events carry the tag ``eventsourcing:<application name>``; its
  notification log is that tag's index, with notification id = ``$all`` position + 1 (ids
  start at 1; snapshots and tracking records carry no tag, so they are not notifications).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    Notification,
    OperationalError,
    PersistenceError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import resolve_topic

import cairn

if TYPE_CHECKING:
    from eventsourcing.utils import Environment

#: Streams whose first version the recorder remembers (oldest forgotten first): the
#: expected revision of an append to a known stream needs no read.
MAX_CACHED_STREAM_BASES = 100_000
#: Notifications one select reads at most, whatever ``limit`` asks (the library's runners
#: ask for a few hundred).
MAX_SELECT_NOTIFICATIONS = 100_000
#: Topics one notification query can name (16 query items of 16 types each).
MAX_TOPICS = cairn.MAX_QUERY_ITEMS * cairn.MAX_QUERY_ITEM_VALUES
#: Prefix of the tag every application event carries; the application's name follows.
APPLICATION_TAG_PREFIX = "eventsourcing:"
#: Prefix of the streams of snapshots; the originator id follows.
SNAPSHOT_STREAM_PREFIX = "snapshot-"
#: Prefix of the tracking streams: ``tracking:<application>:<upstream application>``.
TRACKING_STREAM_PREFIX = "tracking:"
#: The event type of a tracking record.
TRACKING_EVENT_TYPE = "eventsourcing.Tracking"
#: Metadata key of the originator version in every event the recorders write.
VERSION_KEY = "originator_version"


def _version_metadata(version: int) -> bytes:
    return json.dumps({VERSION_KEY: version}, separators=(",", ":")).encode()


def _version_of(event: cairn.RecordedEvent) -> int:
    try:
        return int(json.loads(event.metadata)[VERSION_KEY])
    except (ValueError, KeyError, TypeError) as err:
        raise PersistenceError(
            f"event {event.stream}@{event.revision} was not written by this module: {err}"
        ) from err


def _translate(err: cairn.CairnError) -> PersistenceError:
    """The library's exception for a client error: a concurrency conflict is an
    IntegrityError, bad input a ProgrammingError, a cluster out of reach an
    OperationalError (a TimeoutError-free subclass of the library's DatabaseError)."""
    if isinstance(err, (cairn.WrongExpectedVersion, cairn.IdempotencyConflict)):
        return IntegrityError(str(err))
    if isinstance(err, cairn.InvalidInput):
        return ProgrammingError(str(err))
    if isinstance(err, cairn.Unavailable):
        return OperationalError(str(err))
    return PersistenceError(str(err))


class CairnRecorder:
    """What every recorder shares: the client, the names, and reads that see this
    client's own writes (from the leader, waiting for the last position it wrote)."""

    def __init__(self, client: cairn.Client, application_name: str = "") -> None:
        self.client = client
        self.application_name = application_name
        self.application_tag = APPLICATION_TAG_PREFIX + application_name

    def _read(self, stream: str, **options: Any) -> list[cairn.RecordedEvent]:
        """A whole read as a list; a stream with no events is an empty list."""
        try:
            return list(self.client.read_stream(stream, **self._fresh(), **options))
        except cairn.StreamNotFound:
            return []
        except cairn.CairnError as err:
            raise _translate(err) from err

    def _fresh(self) -> dict[str, Any]:
        """Read options that see every append this client made, and every append
        acknowledged to anyone while leadership holds (the leader applies before it acks)."""
        return {
            "prefer": cairn.NodePreference.LEADER,
            "min_position": self.client.last_position,
        }


class CairnAggregateRecorder(CairnRecorder, AggregateRecorder):
    """Aggregate events (or, ``for_snapshotting``, snapshots) in one stream per aggregate."""

    def __init__(
        self, client: cairn.Client, application_name: str = "", *, for_snapshotting: bool = False
    ) -> None:
        super().__init__(client, application_name)
        self.for_snapshotting = for_snapshotting
        self._bases: OrderedDict[str, int] = OrderedDict()
        self._bases_lock = threading.Lock()

    def stream_name(self, originator_id: Union[UUID, str]) -> str:
        if self.for_snapshotting:
            return SNAPSHOT_STREAM_PREFIX + str(originator_id)
        return str(originator_id)

    # -- writing --------------------------------------------------------------------------

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Optional[Sequence[int]]:
        self._insert(stored_events, None)
        return None

    def _insert(
        self, stored_events: Sequence[StoredEvent], tracking: Optional[Tracking]
    ) -> list[int]:
        """One multi-stream append of every aggregate's events (and the tracking record):
        all or nothing. Returns each event's notification id, in the order given."""
        groups: dict[str, list[int]] = {}
        for index, event in enumerate(stored_events):
            groups.setdefault(self.stream_name(event.originator_id), []).append(index)
        events = {
            stream: [self._event_data(stored_events[i]) for i in indexes]
            for stream, indexes in groups.items()
        }
        expected: dict[str, cairn.ExpectedRevision] = {}
        for stream, indexes in groups.items():
            versions = [stored_events[i].originator_version for i in indexes]
            if self.for_snapshotting:
                if any(a >= b for a, b in zip(versions, versions[1:])):
                    raise IntegrityError(f"stream {stream!r}: versions {versions} not increasing")
            elif versions != list(range(versions[0], versions[0] + len(versions))):
                raise IntegrityError(f"stream {stream!r}: versions {versions} are not consecutive")
            expected[stream] = self._expected(stream, versions[0])
        extra = self._tracking_append(tracking) if tracking is not None else None
        if not groups and extra is None:
            return []
        corrected: set[str] = set()
        while True:  # at most one correction per stream whose first version was unknown
            parts = [cairn.StreamAppend(s, events[s], expected[s]) for s in groups]
            parts += [extra] if extra is not None else []
            try:
                result = self.client.append_multi(parts)
                break
            except cairn.WrongExpectedVersion as err:
                first = stored_events[groups[err.stream][0]] if err.stream in groups else None
                if first is None or err.stream in corrected or self.for_snapshotting:
                    raise IntegrityError(str(err)) from err
                corrected.add(err.stream)
                revision = self._known_expected(err.stream, first.originator_version)
                if revision != err.actual:
                    raise IntegrityError(str(err)) from err
                expected[err.stream] = revision
            except cairn.CairnError as err:
                raise _translate(err) from err
        for stream, indexes in groups.items():
            if not self.for_snapshotting:
                self._remember_base(stream, stored_events[indexes[0]].originator_version
                                    - (0 if expected[stream] is cairn.NO_STREAM
                                       else int(expected[stream]) + 1))
        # The events took consecutive $all positions in the order sent, tracking last.
        tracked = 1 if extra is not None else 0
        position = result.last_position - tracked - len(stored_events) + 1
        ids = [0] * len(stored_events)
        for indexes in groups.values():
            for index in indexes:
                ids[index] = position + 1
                position += 1
        return ids

    def _event_data(self, event: StoredEvent) -> cairn.EventData:
        tags = () if self.for_snapshotting else (self.application_tag,)
        return cairn.EventData.binary(
            event.topic, event.state, metadata=_version_metadata(event.originator_version),
            tags=tags,
        )

    def _expected(self, stream: str, first_version: int) -> cairn.ExpectedRevision:
        """The expected revision for events from ``first_version`` on: exact when the
        stream's first version is known, else "no stream" (a new aggregate, the common
        case; a wrong guess is corrected once, see :meth:`_insert`)."""
        if self.for_snapshotting:
            return self._after_last_snapshot(stream, first_version)
        base = self._cached_base(stream)
        if base is None:
            return cairn.NO_STREAM
        return self._revision_before(stream, first_version, base)

    def _after_last_snapshot(self, stream: str, version: int) -> cairn.ExpectedRevision:
        """Snapshots only move forwards (their stream is read backwards to find the latest
        at or below a version): exact at the last snapshot's revision, if it is older."""
        last = self._read(
            stream, start=cairn.From.END, direction=cairn.Direction.BACKWARDS, count=1
        )
        if not last:
            return cairn.NO_STREAM
        last_version = _version_of(last[0])
        if version <= last_version:
            raise IntegrityError(
                f"stream {stream!r}: a snapshot at version {last_version} exists; "
                f"version {version} is not newer"
            )
        return last[0].revision

    def _known_expected(self, stream: str, first_version: int) -> cairn.ExpectedRevision:
        base = self._base(stream)
        if base is None:
            return cairn.NO_STREAM
        return self._revision_before(stream, first_version, base)

    @staticmethod
    def _revision_before(stream: str, first_version: int, base: int) -> int:
        revision = first_version - base - 1
        if revision < 0:
            raise IntegrityError(
                f"stream {stream!r} starts at version {base}; version {first_version} exists"
            )
        return revision

    # -- the first version of a stream ----------------------------------------------------

    def _cached_base(self, stream: str) -> Optional[int]:
        with self._bases_lock:
            base = self._bases.get(stream)
            if base is not None:
                self._bases.move_to_end(stream)
            return base

    def _remember_base(self, stream: str, base: int) -> None:
        with self._bases_lock:
            self._bases[stream] = base
            self._bases.move_to_end(stream)
            while len(self._bases) > MAX_CACHED_STREAM_BASES:
                self._bases.popitem(last=False)

    def _base(self, stream: str) -> Optional[int]:
        """The version of the stream's first event (``None``: no stream)."""
        base = self._cached_base(stream)
        if base is None:
            first = self._read(stream, count=1)
            if not first:
                return None
            base = _version_of(first[0])
            self._remember_base(stream, base)
        return base

    # -- reading --------------------------------------------------------------------------

    def select_events(
        self,
        originator_id: Union[UUID, str],
        *,
        gt: Optional[int] = None,
        lte: Optional[int] = None,
        desc: bool = False,
        limit: Optional[int] = None,
    ) -> list[StoredEvent]:
        stream = self.stream_name(originator_id)
        if limit is not None and limit <= 0:
            return []
        options: dict[str, Any] = {}
        if not self.for_snapshotting and (gt is not None or lte is not None):
            # Versions are revisions plus the first version: read just the range.
            base = self._base(stream)
            if base is None:
                return []
            low = 0 if gt is None else max(0, gt + 1 - base)
            high = None if lte is None else lte - base
            if high is not None and high < low:
                return []
            if desc:
                options["start"] = cairn.From.END if high is None else high
                options["direction"] = cairn.Direction.BACKWARDS
                wanted = None if high is None else high - low + 1
            else:
                options["start"] = low
                wanted = None if high is None else high - low + 1
            if wanted is not None:
                limit = wanted if limit is None else min(limit, wanted)
        elif desc:
            options["direction"] = cairn.Direction.BACKWARDS
        if limit is not None and (not self.for_snapshotting or (gt is None and lte is None)):
            options["count"] = limit
        selected: list[StoredEvent] = []
        for event in self._read_tolerant(stream, options):
            version = _version_of(event)
            if event.revision == 0 and not self.for_snapshotting:
                self._remember_base(stream, version)
            if (gt is not None and version <= gt) or (lte is not None and version > lte):
                continue  # snapshots: versions are in the metadata only
            selected.append(
                StoredEvent(
                    originator_id=originator_id,
                    originator_version=version,
                    topic=event.type,
                    state=event.data,
                )
            )
            if limit is not None and len(selected) >= limit:
                break
        return selected

    def _read_tolerant(self, stream: str, options: dict[str, Any]) -> list[cairn.RecordedEvent]:
        """A read from a revision the stream may not have reached yet (backwards from a
        version above its last): the server refuses a start beyond the end, so read from
        the end and let the version filter do the rest."""
        try:
            return self._read(stream, **options)
        except ProgrammingError:
            if options.get("direction") is not cairn.Direction.BACKWARDS:
                raise
            return self._read(stream, **{**options, "start": cairn.From.END, "count": None})


class CairnApplicationRecorder(CairnAggregateRecorder, ApplicationRecorder):
    """Aggregate events plus the application's notification log: the index of its tag."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Optional[Sequence[int]]:
        return self._insert(stored_events, None)

    def notification_query(self, topics: Sequence[str] = ()) -> cairn.Query:
        """The application's events, of ``topics`` when given."""
        tags = [self.application_tag]
        if not topics:
            return cairn.Query([cairn.QueryItem(tags=tags)])
        if len(topics) > MAX_TOPICS:
            raise ProgrammingError(f"topics: {len(topics)} given, at most {MAX_TOPICS}")
        step = cairn.MAX_QUERY_ITEM_VALUES
        return cairn.Query(
            [cairn.QueryItem(list(topics[i:i + step]), tags) for i in range(0, len(topics), step)]
        )

    def select_notifications(
        self,
        start: Optional[int],
        limit: int,
        stop: Optional[int] = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        # Notification id = position + 1: ids >= start are positions >= start - 1.
        first = 0 if start is None else max(0, start - 1 if inclusive_of_start else start)
        count = min(limit, MAX_SELECT_NOTIFICATIONS)
        if count <= 0:
            return []
        try:
            events = self.client.read_query(
                self.notification_query(topics), start=first, count=count, **self._fresh()
            )
            notifications = []
            for event in events:
                if stop is not None and event.position + 1 > stop:
                    events.cancel()
                    break
                notifications.append(self.notification(event))
            return notifications
        except cairn.CairnError as err:
            raise _translate(err) from err

    def notification(self, event: cairn.RecordedEvent) -> Notification:
        return Notification(
            id=event.position + 1,
            originator_id=_originator_id(event.stream),
            originator_version=_version_of(event),
            topic=event.type,
            state=event.data,
        )

    def max_notification_id(self) -> Optional[int]:
        try:
            last = list(
                self.client.read_query(
                    self.notification_query(),
                    start=cairn.From.END,
                    direction=cairn.Direction.BACKWARDS,
                    count=1,
                    **self._fresh(),
                )
            )
        except cairn.CairnError as err:
            raise _translate(err) from err
        return last[0].position + 1 if last else None

    def subscribe(
        self, gt: Optional[int] = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return CairnSubscription(self, gt=gt, topics=topics)


def _originator_id(stream: str) -> Union[UUID, str]:
    """The library's originator ids are UUIDs or strings: a stream named like a UUID is one."""
    try:
        return UUID(stream)
    except ValueError:
        return stream


class CairnSubscription(Subscription[CairnApplicationRecorder]):
    """The application's notifications after ``gt``, then new ones as they are recorded: a
    subscription to the tag's index (resubscribed on node loss by the client, no gap, no
    duplicate), filtered by topic here."""

    def __init__(
        self,
        recorder: CairnApplicationRecorder,
        gt: Optional[int] = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._wanted = frozenset(topics)
        try:
            self._subscription = recorder.client.subscribe(
                cairn.tag_index(recorder.application_tag),
                start=gt or 0,  # the position of notification gt + 1
                min_position=recorder.client.last_position,
            )
        except cairn.CairnError as err:
            raise _translate(err) from err

    def __next__(self) -> Notification:
        while not self._has_been_stopped:
            try:
                message = next(self._subscription)
            except StopIteration:
                break
            except cairn.CairnError as err:
                if self._has_been_stopped:
                    break
                raise _translate(err) from err
            if not isinstance(message, cairn.RecordedEvent):
                continue  # caught up, checkpoints: nothing for the library
            if self._wanted and message.type not in self._wanted:
                continue
            notification = self._recorder.notification(message)
            self._last_notification_id = notification.id
            return notification
        raise StopIteration

    def stop(self) -> None:
        super().stop()
        self._subscription.close()


class CairnTrackingRecorder(CairnRecorder, TrackingRecorder):
    """Tracking records: one stream per (this application, upstream application), each
    record an event with the notification id; the last one is the position."""

    def tracking_stream(self, upstream: str) -> str:
        return f"{TRACKING_STREAM_PREFIX}{self.application_name}:{upstream}"

    def insert_tracking(self, tracking: Tracking) -> None:
        append = self._tracking_append(tracking)
        try:
            self.client.append_multi([append])
        except cairn.CairnError as err:
            raise _translate(err) from err

    def _tracking_append(self, tracking: Tracking) -> cairn.StreamAppend:
        """The tracking record as one part of an append: expected at the stream's present
        revision, refused if the position is not beyond the last one recorded."""
        stream = self.tracking_stream(tracking.application_name)
        last = self._last_tracking(stream)
        expected: cairn.ExpectedRevision = cairn.NO_STREAM
        if last is not None:
            revision, notification_id = last
            if tracking.notification_id <= notification_id:
                raise IntegrityError(
                    f"{tracking.application_name} notification {tracking.notification_id}: "
                    f"tracking is already at {notification_id}"
                )
            expected = revision
        record = cairn.EventData.json(
            TRACKING_EVENT_TYPE, {"notification_id": tracking.notification_id}
        )
        return cairn.StreamAppend(stream, record, expected)

    def _last_tracking(self, stream: str) -> Optional[tuple[int, int]]:
        """The tracking stream's last revision and notification id."""
        last = self._read(
            stream, start=cairn.From.END, direction=cairn.Direction.BACKWARDS, count=1
        )
        if not last:
            return None
        return last[0].revision, int(last[0].json()["notification_id"])

    def max_tracking_id(self, application_name: str) -> Optional[int]:
        last = self._last_tracking(self.tracking_stream(application_name))
        return None if last is None else last[1]


class CairnProcessRecorder(CairnApplicationRecorder, CairnTrackingRecorder, ProcessRecorder):
    """An application recorder whose appends can carry a tracking record, atomically."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Optional[Sequence[int]]:
        tracking: Optional[Tracking] = kwargs.get("tracking")
        return self._insert(stored_events, tracking)


class CairnFactory(InfrastructureFactory[CairnTrackingRecorder]):
    """The library's infrastructure factory for Cairn: one client per factory (per
    application), closed with the factory."""

    CAIRN_ENDPOINTS = "CAIRN_ENDPOINTS"
    CAIRN_PROFILE = "CAIRN_PROFILE"

    aggregate_recorder_class = CairnAggregateRecorder
    application_recorder_class = CairnApplicationRecorder
    tracking_recorder_class = CairnTrackingRecorder
    process_recorder_class = CairnProcessRecorder

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        text = self.env.get(self.CAIRN_ENDPOINTS)
        endpoints = [e.strip() for e in text.split(",") if e.strip()] if text else None
        try:
            self.client = cairn.Client(endpoints, profile=self.env.get(self.CAIRN_PROFILE))
        except cairn.CairnError as err:
            raise _translate(err) from err

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self.aggregate_recorder_class(
            self.client, self.env.name, for_snapshotting=purpose == "snapshots"
        )

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._recorder_class(self.APPLICATION_RECORDER_TOPIC, None,
                                   self.application_recorder_class)
        return cls(self.client, self.env.name)

    def tracking_recorder(
        self, tracking_recorder_class: Optional[type[CairnTrackingRecorder]] = None
    ) -> CairnTrackingRecorder:
        cls = self._recorder_class(self.TRACKING_RECORDER_TOPIC, tracking_recorder_class,
                                   self.tracking_recorder_class)
        return cls(self.client, self.env.name)

    def process_recorder(self) -> ProcessRecorder:
        cls = self._recorder_class(self.PROCESS_RECORDER_TOPIC, None,
                                   self.process_recorder_class)
        return cls(self.client, self.env.name)

    def _recorder_class(self, topic_key: str, given: Optional[type], default: type) -> Any:
        """The class given, else the one the environment names by topic, else ours."""
        if given is not None:
            return given
        topic = self.env.get(topic_key)
        return resolve_topic(topic) if topic else default

    def close(self) -> None:
        self.client.close()
        super().close()
