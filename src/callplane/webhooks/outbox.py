"""Durable webhook outbox: at-least-once, per-key ordered delivery of JSON events over HTTP POST
(or GET, per row).

How it works (and why):

* ``enqueue`` serialises the payload once and commits the exact bytes to SQLite before returning, so
  an accepted event survives a crash, and a redelivery after a restart is byte-identical (same body,
  same signature, same ``X-Callplane-Delivery`` id for receivers that deduplicate).
* Ordering: every ``ordering_key`` (a call id) is a *lane*. A lane is in exactly one place at any
  time: the ready queue, a worker's hands, or a backoff timer. Only one request per lane is ever in
  flight, and the lane's head row is deleted only after a 2xx, so the receiver sees each key's
  events in enqueue order even across retries and restarts.
* Isolation: a failing head only parks its own lane on a timer; ``max_concurrency`` workers keep
  serving the other lanes. Parked lanes cost a timer handle, not a task, so thousands of calls whose
  receiver is down do not mean thousands of sleeping coroutines.
* Retries: exponential backoff with jitter between ``min_backoff`` and ``max_backoff`` (jitter
  spreads the retry storm when a shared receiver comes back), ``Retry-After`` honoured on 429/503.
  A row older than ``max_age`` that fails once more is marked dead, logged and kept for inspection,
  and its lane moves on.
* Memory: lanes hold at most a few rows; the rest stay in SQLite until needed.
* Signatures: a row names its project and is signed when it is sent with that project's current
  signing key (read from the store), so rows queued before a restart keep their project's
  signature whatever the new process serves by default. A row whose project was removed is
  given up (nobody may sign for it any more).
* Methods: a row is a POST of its JSON body (the default) or a GET (a stream's
  ``status_url_method``) that carries the same payload as query fields, flattened by
  :func:`query_string`; a GET is signed over the full URL it requests (the row's URL with that
  query appended) and an empty body, so ``verify_signature(key, str(request.url), b"", sig)``
  checks it. The query is a pure function of the stored body: redeliveries stay identical.

After a restart every pending row is tried at once (the persisted ``next_attempt_at`` is for
inspection only): a restart is rare, and a receiver that recovered meanwhile is served sooner.

Not supported: two outboxes (two processes) draining the same database at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from callplane._http1 import ConnectionFailed, ConnectionPool
from callplane._version import __version__
from callplane.netpolicy import TargetPolicy, TargetRefused
from callplane.store import OutboxMethod, OutboxRow, Store
from callplane.webhooks.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign

logger = logging.getLogger("callplane.webhooks")

USER_AGENT = f"callplane/{__version__}"
DEFAULT_MAX_AGE = 24 * 3600.0

# Rows a lane reads from SQLite at a time: enough to amortise the SELECT, small enough that a
# backlog on thousands of keys does not pull every body into memory.
_LANE_BATCH = 16
# Receivers answer with a status; their bodies are not used, only bounded.
_MAX_RESPONSE_BODY = 1024 * 1024
METHODS: tuple[OutboxMethod, ...] = ("POST", "GET")


def query_string(payload: Mapping[str, Any]) -> str:
    """The query string a GET delivery of ``payload`` carries.

    Nested objects and lists are flattened with brackets, the convention PHP, Rack/Rails and
    Node's ``qs`` turn back into the nested structure: ``{"params": {"state": "streaming"}}`` is
    ``params[state]=streaming``, list items are ``name[0]``, ``name[1]``. Strings go as they
    are, ``true``/``false`` for booleans, numbers in their JSON spelling, ``null`` as an empty
    value; an empty object or list sends no field. Fields keep the payload's order and are
    percent-encoded (RFC 3986: brackets too, a space as ``%20``).
    """
    fields: list[tuple[str, str]] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{name}[{key}]", item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(f"{name}[{index}]", item)
        elif value is None:
            fields.append((name, ""))
        elif isinstance(value, bool):
            fields.append((name, "true" if value else "false"))
        elif isinstance(value, str):
            fields.append((name, value))
        else:
            fields.append((name, json.dumps(value)))

    for key, value in payload.items():
        walk(str(key), value)
    return urlencode(fields, quote_via=quote)


def with_query(url: str, query: str) -> str:
    """``url`` (without a fragment, which never reaches the server) with ``query`` appended to
    the query it may already have: the URL a GET delivery requests and signs."""
    base = url.partition("#")[0]
    if not query:
        return base
    if "?" not in base:
        return f"{base}?{query}"
    return base + query if base.endswith(("?", "&")) else f"{base}&{query}"


@dataclass
class OutboxStats:
    """Counters since this outbox object was created (not persisted)."""

    enqueued: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    dead: int = 0


@dataclass
class _Lane:
    key: str
    rows: collections.deque[OutboxRow] = field(default_factory=collections.deque)
    last_loaded_id: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Outcome:
    ok: bool
    error: str = ""
    retry_after: float | None = None
    permanent: bool = False  # retrying cannot help (malformed URL): give up at once


class WebhookOutbox:
    """Deliver JSON payloads to URLs, durably, at least once and in order per ordering key.

    ``store`` is owned by the caller (the outbox never closes it). Deliveries go over keep-alive
    HTTP/1.1 connections, one pool per receiver origin (``callplane._http1``), ``timeout`` seconds
    per attempt; redirects are not followed (a redirect is not an acknowledgement: it is retried).
    ``signing_key`` signs rows enqueued without a ``project_id``.
    ``targets`` vets every connection (`callplane.netpolicy`): a receiver the policy refuses is
    given up at once (marked dead, logged), since retrying cannot change the answer.
    """

    def __init__(
        self,
        store: Store,
        *,
        signing_key: str,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_age: float = DEFAULT_MAX_AGE,
        max_concurrency: int = 16,
        timeout: float = 10.0,
        user_agent: str = USER_AGENT,
        targets: TargetPolicy | None = None,
    ) -> None:
        if min_backoff <= 0 or max_backoff < min_backoff:
            raise ValueError("need 0 < min_backoff <= max_backoff")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._store = store
        self._signing_key = signing_key
        self._pools: dict[str, ConnectionPool] = {}  # one keep-alive pool per receiver origin
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._max_age = max_age
        self._max_concurrency = max_concurrency
        self._timeout = timeout
        self._user_agent = user_agent
        self._targets = targets or TargetPolicy()
        self.stats = OutboxStats()

        self._running = False
        self._lanes: dict[str, _Lane] = {}
        self._ready: asyncio.Queue[str] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ public API

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Start delivering; resumes every pending row left in the database, in order per key."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Queue()
        self._running = True
        for key in self._store.outbox_pending_keys():
            self._activate(key)
        self._workers = [
            asyncio.create_task(self._worker(), name=f"webhook-worker-{i}")
            for i in range(self._max_concurrency)
        ]

    def enqueue(
        self,
        url: str,
        payload: dict[str, Any],
        ordering_key: str,
        *,
        project_id: str | None = None,
        method: str = "POST",
    ) -> int:
        """Persist a delivery of ``payload`` to ``url`` and schedule it; returns the row id.

        The row is committed before this returns. Deliveries with the same ``ordering_key`` arrive
        in the order they were enqueued, whatever their method. May be called before
        :meth:`start` (or after :meth:`stop`): the row then waits in the database for the next
        start. The row is signed with ``project_id``'s signing key when sent (the default key
        without one). ``method`` is ``POST`` (the payload as a JSON body) or ``GET`` (as query
        fields, see :func:`query_string`), in any case; anything else is a ValueError.
        Must be called from the event loop thread.
        """
        verb = method.upper()
        if verb not in METHODS:
            raise ValueError(f"webhook method must be GET or POST, got {method!r}")
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        row_id = self._store.outbox_add(ordering_key, url, body, project_id=project_id, method=verb)
        self.stats.enqueued += 1
        # An existing lane will find the new row when it refills from the database; only an idle
        # key needs waking.
        if self._running and ordering_key not in self._lanes:
            self._activate(ordering_key)
        return row_id

    async def wait_idle(self) -> None:
        """Wait until no lane is active: everything enqueued so far is delivered or dead.

        Bound it with ``asyncio.timeout`` if needed. Returns at once when not started.
        """
        await self._idle.wait()

    def retry_dead(self, ordering_key: str | None = None) -> int:
        """Put dead rows (all, or one key's) back in the queue with a fresh max_age; returns how
        many. Their lanes are (re)scheduled at once when the outbox is running."""
        count = self._store.outbox_requeue_dead(ordering_key=ordering_key)
        if count and self._running:
            for key in self._store.outbox_pending_keys():
                lane = self._lanes.get(key)
                if lane is None:
                    self._activate(key)
                else:
                    # Rows already buffered were loaded in id order; re-reading from the start
                    # when the buffer runs dry picks up the revived (older) rows too.
                    lane.last_loaded_id = 0
        return count

    def pending_count(self) -> int:
        """Rows not yet delivered (in the database, including those not started yet)."""
        return self._store.outbox_count("pending")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Try to deliver what is pending for up to ``flush_timeout`` s, then stop.

        Lanes waiting out a backoff get one immediate extra try. Whatever is still undelivered
        (including a request cut off in flight) stays pending in the database for the next start.
        """
        if not self._running:
            return
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None
                self._make_ready(lane.key)
        if flush_timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), flush_timeout)
        self._running = False
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
        self._lanes.clear()
        self._idle.set()
        self._ready = None
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()
        left = self._store.outbox_count("pending")
        if left:
            logger.info("webhook outbox stopped with %d deliveries pending", left)

    # ------------------------------------------------------------------ scheduling

    def _activate(self, key: str) -> None:
        self._lanes[key] = _Lane(key)
        self._idle.clear()
        self._make_ready(key)

    def _make_ready(self, key: str) -> None:
        lane = self._lanes.get(key)
        if lane is not None:
            lane.timer = None
        if self._ready is not None:
            self._ready.put_nowait(key)

    def _park(self, lane: _Lane, delay: float) -> None:
        assert self._loop is not None
        lane.timer = self._loop.call_later(delay, self._make_ready, lane.key)

    def _head(self, lane: _Lane) -> OutboxRow | None:
        if not lane.rows:
            rows = self._store.outbox_pending(
                lane.key, after_id=lane.last_loaded_id, limit=_LANE_BATCH
            )
            if rows:
                lane.rows.extend(rows)
                lane.last_loaded_id = rows[-1]["id"]
        return lane.rows[0] if lane.rows else None

    async def _worker(self) -> None:
        assert self._ready is not None
        ready = self._ready
        while True:
            key = await ready.get()
            lane = self._lanes.get(key)
            if lane is None or lane.timer is not None:
                continue  # stale wake-up
            try:
                await self._serve(lane)
            except Exception:
                # A store error (disk full, database closed under us) must not kill the worker or
                # lose the lane: log it and try the lane again later; its rows are still pending.
                logger.exception("webhook outbox: error serving key %r", key)
                lane.rows.clear()
                lane.last_loaded_id = 0
                if self._running:
                    self._park(lane, self._max_backoff)

    async def _serve(self, lane: _Lane) -> None:
        """Make one delivery attempt for the lane's head row and decide where the lane goes next."""
        row = self._head(lane)
        if row is None:
            # No await between the empty check and the removal, so an enqueue cannot slip in
            # between and be missed: it will see the key absent and activate a new lane.
            del self._lanes[lane.key]
            if not self._lanes:
                self._idle.set()
            return

        outcome = await self._attempt(row)
        now = time.time()
        if outcome.ok:
            self._store.outbox_delete(row["id"])
            lane.rows.popleft()
            self.stats.delivered += 1
            self._make_ready(lane.key)  # back of the queue: lanes share workers round-robin
            return

        attempts = row["attempts"] + 1
        row["attempts"] = attempts
        self.stats.failed_attempts += 1
        age = now - row["created_at"]
        if outcome.permanent or age >= self._max_age:
            self._store.outbox_mark_dead(row["id"], attempts=attempts, error=outcome.error)
            lane.rows.popleft()
            self.stats.dead += 1
            logger.warning(
                "webhook delivery %d to %s given up after %d attempts over %.0f s: %s",
                row["id"],
                row["url"],
                attempts,
                age,
                outcome.error,
            )
            self._make_ready(lane.key)
            return

        delay = outcome.retry_after if outcome.retry_after is not None else self._backoff(attempts)
        # Never sleep past the row's deadline: make the last attempt at max_age, then give up.
        delay = min(delay, max(0.0, row["created_at"] + self._max_age - now))
        self._store.outbox_retry_later(
            row["id"], attempts=attempts, next_attempt_at=now + delay, error=outcome.error
        )
        log = logger.info if attempts == 1 else logger.debug
        log(
            "webhook delivery %d to %s failed (attempt %d: %s); retry in %.2f s",
            row["id"],
            row["url"],
            attempts,
            outcome.error,
            delay,
        )
        self._park(lane, delay)

    def _backoff(self, attempts: int) -> float:
        # Exponential growth of the ceiling, then a uniform pick between min_backoff and it, so
        # many lanes failing together (one receiver down) do not retry in lockstep.
        ceiling = min(self._max_backoff, self._min_backoff * 2.0 ** min(attempts - 1, 60))
        return random.uniform(self._min_backoff, ceiling)

    # ------------------------------------------------------------------ HTTP

    def _pool_for(self, url: str) -> tuple[ConnectionPool, str]:
        """The pool of the URL's origin and the request target (path and query) within it."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        parts.port  # noqa: B018 - raises ValueError on a malformed port
        origin = f"{parts.scheme.lower()}://{parts.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            pool = ConnectionPool(
                origin,
                headers={"User-Agent": self._user_agent},
                max_connections=self._max_concurrency,
                timeout=self._timeout,
                connect_to=self._targets.vet,
                max_body=_MAX_RESPONSE_BODY,
            )
            self._pools[origin] = pool
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        return pool, target

    async def _attempt(self, row: OutboxRow) -> _Outcome:
        url, body = row["url"], row["body"]
        get = row["method"] == "GET"
        try:
            if get:
                payload = json.loads(body)
                if not isinstance(payload, dict):
                    raise ValueError("a GET delivery needs a JSON object to send as its query")
                url = with_query(url, query_string(payload))
                body = b""
            pool, target = self._pool_for(url)
        except ValueError as exc:  # a malformed URL (or a body that is not a JSON object)
            return _Outcome(ok=False, error=str(exc), permanent=True)
        key = self._signing_key
        if row["project_id"] is not None:
            project = self._store.get_project(row["project_id"])
            if project is None:
                error = f"project {row['project_id']} was removed: nobody signs for it"
                return _Outcome(ok=False, error=error, permanent=True)
            key = project["signing_key"]
        headers = {
            SIGNATURE_HEADER: sign(key, url, body),
            DELIVERY_HEADER: str(row["id"]),
        }
        if not get:
            headers["Content-Type"] = "application/json"
        try:
            response = await pool.request(row["method"], target, None if get else body, headers)
        except ConnectionFailed as exc:
            if isinstance(exc.__cause__, TargetRefused):
                return _Outcome(ok=False, error=str(exc), permanent=True)
            # Connection refused, timeouts, resets: the receiver is down or slow; retry.
            return _Outcome(ok=False, error=str(exc))
        if 200 <= response.status < 300:
            return _Outcome(ok=True)
        retry_after = None
        if response.status in (429, 503):
            retry_after = self._retry_after(response.headers.get("retry-after"))
        return _Outcome(ok=False, error=f"HTTP {response.status}", retry_after=retry_after)

    def _retry_after(self, value: str | None) -> float | None:
        """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None if unusable."""
        if not value:
            return None
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                return None
            seconds = when.timestamp() - time.time()
        # The receiver's wish is honoured even above max_backoff, but bounded by max_age (the
        # deadline cap in _serve) and never negative.
        return max(0.0, seconds)
