"""SWML `enter_queue`, and the queue side of `connect` to `queue:<name>`.

A caller that enters a queue is answered and parked with `wait_url` audio (looped) until an
agent's call runs `connect` to `queue:<name>`, which takes the longest-waiting caller and
bridges it through `Services.bridge` (no dialling: the caller's leg exists already). The
caller's `enter_queue` then lasts as long as the bridge; when the agent hangs up first, the
caller goes on with `transfer_after_bridge` (a URL or inline SWML, like SWML `transfer`).
`wait_time` (3600 s) bounds the wait; a caller who hangs up while waiting leaves the queue.

Events are `calling.call.queue` to the caller's `status_url` and its call's event log:
`enqueue` (position and size after joining), `dequeue` (taken by an agent, with the position it
had and the agent's call id) and `leave` (timeout or hang-up, with `reason`). Positions are
1-based, the longest-waiting caller first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from callplane.engine.audio import PlayItemError, swml_sound_to_item
from callplane.engine.calls import NOT_ANSWERED_YET
from callplane.engine.swml.errors import SwmlError

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.engine.services import CommandHandler, Services, SwmlMethod
    from callplane.media.engine import Playback

log = logging.getLogger("callplane.engine.queue")

EVENT_TYPE = "calling.call.queue"
DEFAULT_WAIT_TIME = 3600.0


@dataclass
class _Report:
    call: Call
    status_url: str | None
    event_type: str = EVENT_TYPE
    kind: str = "queue"


class Waiter:
    """One caller waiting in (or taken from) a queue; the call's live operation meanwhile."""

    def __init__(
        self,
        queue: Queue,
        call: Call,
        *,
        status_url: str | None,
        transfer_after_bridge: str | None,
    ) -> None:
        self.queue = queue
        self.call = call
        self.status_url = status_url
        self.transfer_after_bridge = transfer_after_bridge
        self.enqueued_at = time.time()
        self.hold: Playback | None = None
        self.agent: Call | None = None
        # Set when an agent takes the caller (its call), or cancelled when the caller leaves.
        self.taken: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def key(self) -> tuple[str, str]:
        return ("queue", self.queue.id)

    async def stop(self) -> None:
        """The caller's call is ending."""
        self.queue.leave(self, "hangup")
        if not self.done.done():
            self.done.set_result("hangup")

    def wait_duration(self) -> int:
        return int(time.time() - self.enqueued_at)

    def stop_hold(self) -> None:
        if self.hold is not None:
            self.hold.stop()
            self.hold = None


class Queue:
    def __init__(self, services: Services, project_id: str, name: str) -> None:
        self.services = services
        self.project_id = project_id
        self.name = name
        self.id = str(uuid.uuid4())
        self.created_at = time.time()
        self.waiting: list[Waiter] = []  # longest-waiting first
        self.dequeued = 0
        self.left = 0
        self._agents: list[asyncio.Future[None]] = []  # agents waiting for a caller

    def _event(self, w: Waiter, status: str, position: int, **extra: Any) -> None:
        params = {
            "call_id": w.call.id,
            "status": status,
            "id": self.id,
            "queue_id": self.id,
            "name": self.name,
            "queue_name": self.name,
            "position": position,
            "size": len(self.waiting),
            "enqueued_at": w.enqueued_at,
            **extra,
        }
        self.services.emit(_Report(w.call, w.status_url), params)

    def enqueue(self, w: Waiter) -> None:
        self.waiting.append(w)
        self._event(w, "enqueue", len(self.waiting))
        for agent in self._agents:
            if not agent.done():
                agent.set_result(None)

    def take(self, agent: Call) -> Waiter | None:
        """The longest-waiting caller, out of the queue and off hold; None if nobody waits."""
        while self.waiting:
            w = self.waiting.pop(0)
            if w.call.is_terminal or w.taken.done():
                continue
            w.stop_hold()
            w.agent = agent
            self.dequeued += 1
            self._event(w, "dequeue", 1, agent_call_id=agent.id, wait_duration=w.wait_duration())
            w.taken.set_result(agent)
            return w
        return None

    async def wait_for_caller(self, seconds: float) -> None:
        """Until someone enters the queue (or `seconds` pass)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._agents.append(fut)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, seconds)
        finally:
            self._agents.remove(fut)

    def leave(self, w: Waiter, reason: str) -> None:
        if w not in self.waiting:
            return
        position = self.waiting.index(w) + 1
        self.waiting.remove(w)
        w.stop_hold()
        self.left += 1
        self._event(w, "leave", position, reason=reason, wait_duration=w.wait_duration())
        if not w.taken.done():
            w.taken.cancel()

    def position(self, w: Waiter) -> int | None:
        return self.waiting.index(w) + 1 if w in self.waiting else None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": len(self.waiting),
            "created_at": self.created_at,
            "dequeued": self.dequeued,
            "left": self.left,
            "callers": [
                {"call_id": w.call.id, "position": k + 1, "enqueued_at": w.enqueued_at}
                for k, w in enumerate(self.waiting)
            ],
        }


class Queues:
    """Every queue of the engine, by project and name (created on first use, kept after)."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], Queue] = {}

    def get(self, services: Services, project_id: str, name: str) -> Queue:
        key = (project_id, name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = Queue(services, project_id, name)
        return queue

    def list(self, project_id: str) -> list[dict[str, Any]]:
        return [q.describe() for (pid, _), q in self._queues.items() if pid == project_id]


def queues_of(services: Services) -> Queues:
    queues = services.extensions.get("queue")
    if not isinstance(queues, Queues):
        queues = services.extensions["queue"] = Queues()
    return queues


# ---------------------------------------------------------------------------------------------
# the caller's side: enter_queue


async def _start_hold(services: Services, w: Waiter, sounds: list[str]) -> None:
    media = w.call.media
    if media is None or not sounds:
        return
    playlist = []
    try:
        for sound in sounds:
            playlist.append(
                await services.audio.resolve(
                    swml_sound_to_item(sound), language="en-US", voice=None, gender="female"
                )
            )
    except (PlayItemError, ValueError) as exc:
        log.warning("queue %s: no wait audio for %s: %s", w.queue.name, w.call.id, exc)
        return
    if w.taken.done() or media.closed or not playlist:
        return
    w.hold = media.play(playlist, loop=0)


def after_bridge_document(dest: str) -> dict[str, Any]:
    """A one-step script that transfers to `dest` (a URL or inline SWML), as SWML `transfer`."""
    return {"version": "1.0.0", "sections": {"main": [{"transfer": {"dest": dest}}]}}


def transfer_dest(value: Any) -> str | None:
    """`transfer_after_bridge` as a `transfer` destination: a URL, or inline SWML as text."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


async def swml_enter_queue(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    name = params.get("queue_name")
    if not isinstance(name, str) or not name:
        raise SwmlError("enter_queue needs a `queue_name`")
    transfer_after = transfer_dest(params.get("transfer_after_bridge"))
    if transfer_after is None:
        raise SwmlError("enter_queue needs `transfer_after_bridge`")
    try:
        wait_time = float(params.get("wait_time", DEFAULT_WAIT_TIME))
    except (TypeError, ValueError):
        raise SwmlError("enter_queue `wait_time` must be a number of seconds") from None
    if wait_time < 1:
        raise SwmlError("enter_queue `wait_time` must be at least 1 second")
    wait_url = params.get("wait_url")
    sounds = [str(wait_url)] if isinstance(wait_url, str) else list(wait_url or [])
    if call.status in NOT_ANSWERED_YET:
        await services.answer(call)
    if call.media is None or call.media.closed or call.is_terminal:
        return {"enter_queue_result": "failed", "return_value": "failed"}
    queue = queues_of(services).get(services, call.project_id, name)
    status_url = params.get("status_url")
    w = Waiter(
        queue,
        call,
        status_url=str(status_url) if status_url else None,
        transfer_after_bridge=transfer_after,
    )
    call.operations[w.key] = w
    try:
        queue.enqueue(w)
        hold = asyncio.create_task(_start_hold(services, w, sounds))
        try:
            agent = await asyncio.wait_for(asyncio.shield(w.taken), wait_time)
        except TimeoutError:
            queue.leave(w, "timeout")
            return {"enter_queue_result": "timeout", "return_value": "timeout"}
        except asyncio.CancelledError:
            if w.taken.cancelled():  # the caller hung up while waiting
                return {"enter_queue_result": "hangup", "return_value": "hangup"}
            queue.leave(w, "hangup")
            raise
        finally:
            hold.cancel()
        # Taken: the agent's connect bridges us; stay as long as the bridge does.
        how = await _bridged(call, agent, w)
    finally:
        call.operations.pop(w.key, None)
    if how == "agent_left" and not call.is_terminal and call.swml is not None:
        # The agent hung up first: the caller goes on with transfer_after_bridge, as SWML
        # `transfer` would (the interpreter replaces this script).
        task = asyncio.create_task(call.swml.replace(after_bridge_document(transfer_after)))
        call.tasks.add(task)
        task.add_done_callback(call.tasks.discard)
        await asyncio.Event().wait()  # cancelled by the replacement
    return {"enter_queue_result": "bridged", "return_value": "bridged"}


async def _bridged(call: Call, agent: Call, w: Waiter) -> str:
    """Wait for the agent's bridge to form and then to end; who ended it."""
    for _ in range(250):  # the agent's connect bridges within the same loop turn or so
        if call.bridge is not None or call.is_terminal or agent.is_terminal:
            break
        await asyncio.sleep(0.02)
    bridge = call.bridge
    if bridge is None:
        return "agent_left" if not call.is_terminal else "caller_left"
    how = await asyncio.shield(bridge.ended)
    if w.done.done() or call.is_terminal:
        return "caller_left"
    return "agent_left" if how in ("owner_hangup", "peer_hangup") else "split"


# ---------------------------------------------------------------------------------------------
# the agent's side: connect to queue:<name>


async def take_caller(services: Services, agent: Call, name: str, seconds: float) -> Waiter | None:
    """For `connect` to `queue:<name>`: the longest-waiting caller, waiting up to `seconds`
    for one to arrive."""
    queue = queues_of(services).get(services, agent.project_id, name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        w = queue.take(agent)
        if w is not None:
            return w
        left = deadline - loop.time()
        if left <= 0 or agent.is_terminal:
            return None
        await queue.wait_for_caller(left)


COMMANDS: dict[str, CommandHandler] = {}
SWML_METHODS: dict[str, SwmlMethod] = {"enter_queue": swml_enter_queue}


def queue_name(destination: str) -> str | None:
    """`queue:<name>` -> name; anything else None."""
    if destination.startswith("queue:"):
        return destination[len("queue:") :].strip() or None
    return None
