"""callplane: a self-hostable Calling API server with real SIP/RTP media, and its Python client."""

from callplane._version import __version__
from callplane.client import (
    AsyncRestClient,
    CallplaneError,
    RestClient,
    RestError,
    TransportError,
)

__all__ = [
    "AsyncRestClient",
    "CallplaneError",
    "RestClient",
    "RestError",
    "TransportError",
    "__version__",
]
