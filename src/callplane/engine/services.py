"""What operation modules may use of the engine, handed to every command and SWML handler.

Operations (play, record, collect, ...) live in `engine/operations/`, one module each, and
register their REST commands and SWML methods in tables; the engine dispatches through those
tables, so adding an operation never touches the engine's core.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx

    from callplane.engine.audio import AudioResolver
    from callplane.engine.bridge import Bridge
    from callplane.engine.calls import Call
    from callplane.engine.config import EngineConfig
    from callplane.media.engine import MediaEngine
    from callplane.providers.asr import SpeechRecognizer
    from callplane.providers.llm import LanguageModel
    from callplane.store import Store


class Reporting(Protocol):
    """What the engine needs of an operation to deliver its events (operations.base.Operation)."""

    @property
    def call(self) -> Call: ...

    @property
    def event_type(self) -> str: ...

    @property
    def status_url(self) -> str | None: ...


@dataclass(frozen=True)
class PeerDial:
    """One destination a bridge dials (SWML `connect` destination, a transfer target)."""

    to: str  # sip: URI, E.164 number (over --trunk) or a local route name
    from_: str
    timeout: float = 60.0
    codecs: tuple[str, ...] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = None
    status_url: str | None = None  # the peer call's own `calling.call.state` webhooks
    status_events: tuple[str, ...] = ("ended",)
    # SWML run on the callee once it answers, before the bridge (a URL or a list of methods);
    # the destination counts as answered only if the script ends without hanging up.
    confirm: str | tuple[Any, ...] | None = None
    confirm_timeout: float | None = None


@dataclass(frozen=True)
class Services:
    config: EngineConfig
    store: Store
    audio: AudioResolver
    # Store an operation's event and send it to the operation's status_url.
    emit: Callable[[Reporting, dict[str, Any]], None]
    # Store a call event that is not an operation's (e.g. calling.user_event); no webhook.
    record_event: Callable[[Call, str, dict[str, Any]], None]
    # Store a payload built by the caller with the call and send it to the URL, if any.
    deliver: Callable[[Call, dict[str, Any], str | None], None]
    answer: Callable[[Call], Awaitable[None]]
    hang_up: Callable[[Call, str], Awaitable[None]]
    # Dial a peer leg for `parent` (no SWML runs on it); returns once its INVITE is on its way.
    # Raises CommandError for a destination that cannot be dialled.
    dial_leg: Callable[[Call, PeerDial], Awaitable[Call]]
    # Bridge two answered calls: each hears the other until the bridge ends.
    bridge: Callable[[Call, Call], Bridge]
    # Send the inbound caller a 183 with our SDP, so ringback and early media reach it unanswered.
    early_answer: Callable[[Call], Awaitable[None]]
    # Run a connect destination's `confirm` SWML on the answered peer: True when it accepted.
    confirm: Callable[[Call, PeerDial], Awaitable[bool]]
    # Speech recognition for collect and prompt; None = not installed (speech answers 501).
    recognizer: SpeechRecognizer | None = None
    # The language model of AI agents; None = not configured (`ai` fails at once, saying so).
    llm: LanguageModel | None = None
    # The engine's HTTP client (through the outbound target policy), for operations' own
    # requests (SWAIG function web hooks).
    http: httpx.AsyncClient | None = None
    # The media graph, for operations that mix more than two calls (conferences, rooms).
    media: MediaEngine | None = None
    # Engine-wide state that operations share across calls (the conference and queue
    # directories), keyed by the owning module; like `Call.extensions`, one level up.
    extensions: dict[str, Any] = field(default_factory=dict)


CommandHandler = Callable[[Services, "Call", dict[str, Any]], Awaitable[None]]
SwmlMethod = Callable[[Services, "Call", dict[str, Any]], Awaitable[dict[str, Any] | None]]
