"""Operations: the long-running things a command starts on a call, addressed by `control_id`.

Each operation is an explicit state machine. Every transition emits one event (reference §7.3)
to the call's event log and to the operation's `status_url`; the subclasses only decide when to
move. A REST command and its SWML method drive the same operation class.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from callplane.engine.facade import CommandError

if TYPE_CHECKING:
    from callplane.engine.calls import Call

log = logging.getLogger("callplane.engine.operations")

Emit = Callable[["Operation", dict[str, Any]], None]

_started = itertools.count()


class Operation:
    kind: ClassVar[str]
    event_type: ClassVar[str]
    # state -> the states it may move to; states with no way out are terminal.
    transitions: ClassVar[Mapping[str, frozenset[str]]]
    initial_state: ClassVar[str]
    # Whether the operation puts audio into the call's outbound stream (play, prompts), and
    # whether it must be the only one that does (a fax: any other sound breaks its modems).
    writes_audio: ClassVar[bool] = False
    exclusive_audio: ClassVar[bool] = False

    def __init__(self, call: Call, control_id: str, status_url: str | None, emit: Emit) -> None:
        self.call = call
        self.control_id = control_id
        self.status_url = status_url
        self.state = self.initial_state
        self._emit = emit
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # Start order across the process: SWML's "stop the latest one" finds it by this.
        self.sequence = next(_started)

    @property
    def is_terminal(self) -> bool:
        return not self.transitions.get(self.state)

    def move(self, new_state: str, **params: Any) -> bool:
        """Take a transition and emit its event; an impossible move is ignored and says so."""
        if new_state not in self.transitions.get(self.state, frozenset()):
            log.debug("%s %s: ignoring %s -> %s", self.kind, self.control_id, self.state, new_state)
            return False
        self.state = new_state
        self._emit(self, {"control_id": self.control_id, "state": new_state, **params})
        if self.is_terminal:
            self.call.operations.pop((self.kind, self.control_id), None)
            if not self.done.done():
                self.done.set_result(new_state)
        return True

    def report(self, params: dict[str, Any]) -> None:
        """Emit an event that is not a state change (a collect result, a detect event):
        `control_id` is added; the caller gives the rest of the event's params."""
        self._emit(self, {"control_id": self.control_id, **params})

    def finish(self, new_state: str, **params: Any) -> None:
        """Reach a terminal state without emitting (the last `report` already said it)."""
        self.state = new_state
        self.call.operations.pop((self.kind, self.control_id), None)
        if not self.done.done():
            self.done.set_result(new_state)

    async def stop(self) -> None:
        """End the operation (command `.stop`, call hang-up)."""
        raise NotImplementedError

    def require_state(self, *states: str, action: str) -> None:
        if self.state not in states:
            raise CommandError(
                422,
                "invalid_state",
                f"cannot {action} {self.kind} {self.control_id!r}: it is {self.state}",
                "control_id",
            )


OpT = TypeVar("OpT", bound=Operation)


def control_id_of(params: Mapping[str, Any]) -> str:
    """The command's control_id: required by the reference, optional in the SDK's signatures
    and missing from its examples (reference §9.2), so one is generated when absent."""
    return str(params.get("control_id") or uuid.uuid4())


def require_answered(call: Call, action: str) -> None:
    if call.status != "answered":
        raise CommandError(
            422,
            "invalid_state",
            f"call {call.id} is {call.status.value}; only an answered call can be {action}",
            "id",
        )


def register(call: Call, op: Operation) -> None:
    key = (op.kind, op.control_id)
    if key in call.operations:
        raise CommandError(
            409,
            "invalid_state",
            f"a {op.kind} with control_id {op.control_id!r} is already active on this call",
            "control_id",
        )
    if op.writes_audio:
        for other in call.operations.values():
            if getattr(other, "exclusive_audio", False) or (
                op.exclusive_audio and getattr(other, "writes_audio", False)
            ):
                raise CommandError(
                    409,
                    "invalid_state",
                    f"a {getattr(other, 'kind', 'operation')} owns this call's outbound audio;"
                    f" {op.kind} cannot run until it ends",
                    None,
                )
    call.operations[key] = op


def register_started(call: Call, op: Operation, start: Callable[[], object]) -> None:
    """`register`, then `start()`: an operation whose start fails leaves nothing registered,
    so the control_id is free for the next attempt."""
    register(call, op)
    try:
        start()
    except BaseException:
        unregister(call, op)
        raise


def unregister(call: Call, op: Operation) -> None:
    call.operations.pop((op.kind, op.control_id), None)


def lookup(call: Call, kind: type[OpT], params: Mapping[str, Any]) -> OpT:
    """The running operation of this kind that `params["control_id"]` names."""
    control_id = str(params["control_id"])
    op = call.operations.get((kind.kind, control_id))
    if not isinstance(op, kind):
        raise CommandError(
            422,
            "invalid_state",
            f"no active {kind.kind} with control_id {control_id!r} on this call",
            "control_id",
        )
    return op


def named_or_latest(
    call: Call,
    kind: type[OpT],
    control_id: object,
    where: Callable[[OpT], bool] = lambda op: True,
) -> OpT | None:
    """SWML's `stop_*` target: the running operation `control_id` names, or without one the
    latest started that `where` accepts; None when there is none."""
    if control_id:
        found = call.operations.get((kind.kind, str(control_id)))
        return found if isinstance(found, kind) else None
    running = [op for op in call.operations.values() if isinstance(op, kind) and where(op)]
    return max(running, key=lambda op: op.sequence, default=None)
