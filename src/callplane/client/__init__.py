"""Python client for the Calling API, hosted (SignalWire) or local (callplane).

>>> from callplane import RestClient
>>> with RestClient("project-id", "api-token", "127.0.0.1:8080") as client:
...     call = client.calling.dial(from_="+15550001111", to="+15550002222", url="https://…")
...     client.calling.end(call["id"], reason="hangup")
"""

from callplane.client._calling import Calling
from callplane.client._client import AsyncRestClient, RestClient
from callplane.client._errors import CallplaneError, RestError, TransportError
from callplane.client._types import (
    AiReset,
    CollectDigits,
    CollectSpeech,
    DetectConfig,
    DetectParams,
    LiveTranscribeAction,
    LiveTranscribeStart,
    LiveTranslateAction,
    LiveTranslateStart,
    PlayItem,
    PlayItemParams,
    RecordAudio,
    RecordConfig,
    ReferDevice,
    ReferDeviceParams,
    SidecarAction,
    SidecarParams,
    SidecarPermissions,
    Summarize,
    TapConfig,
    TapDevice,
    TapDeviceParams,
    TapParams,
    TranslateInject,
)

__all__ = [
    "AiReset",
    "AsyncRestClient",
    "Calling",
    "CallplaneError",
    "CollectDigits",
    "CollectSpeech",
    "DetectConfig",
    "DetectParams",
    "LiveTranscribeAction",
    "LiveTranscribeStart",
    "LiveTranslateAction",
    "LiveTranslateStart",
    "PlayItem",
    "PlayItemParams",
    "RecordAudio",
    "RecordConfig",
    "ReferDevice",
    "ReferDeviceParams",
    "RestClient",
    "RestError",
    "SidecarAction",
    "SidecarParams",
    "SidecarPermissions",
    "Summarize",
    "TapConfig",
    "TapDevice",
    "TapDeviceParams",
    "TapParams",
    "TranslateInject",
    "TransportError",
]
