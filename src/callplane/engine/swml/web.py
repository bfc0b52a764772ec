"""HTTP for the SWML interpreter: fetching documents (reference §7.5) and the `request` method."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from .document import SwmlDocument, load_document
from .errors import SwmlError, SwmlFetchError

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "HttpSwmlFetcher",
    "SwmlFetcher",
    "build_fetch_body",
    "perform_request",
]

log = logging.getLogger("callplane.engine.swml")

#: What a SWML URL may answer with (swml.md §1).
ACCEPTED_CONTENT_TYPES = ("application/json", "application/yaml", "text/x-yaml")

_MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
_MAX_RESPONSE_BODY_CHARS = 64 * 1024
_MAX_RESPONSE_HEADERS = 64


def build_fetch_body(
    call: Mapping[str, Any],
    vars: Mapping[str, Any],
    envs: Mapping[str, Any],
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON body POSTed to a SWML URL: ``{call, vars, envs, params}`` (reference §7.5).

    Deep-copied so a fetch in flight never sees (or leaks) later mutations of the script's vars.
    """
    return {
        "call": copy.deepcopy(dict(call)),
        "vars": copy.deepcopy(dict(vars)),
        "envs": copy.deepcopy(dict(envs)),
        "params": copy.deepcopy(dict(params)),
    }


class SwmlFetcher(Protocol):
    """Fetches a SWML document from a URL. The engine passes one to the interpreter."""

    async def fetch(
        self,
        url: str,
        body: dict[str, Any],
        *,
        method: str = "POST",
        fallback_url: str | None = None,
    ) -> SwmlDocument:
        """Return the loaded document, or raise `SwmlFetchError`."""
        ...


class HttpSwmlFetcher:
    """Default `SwmlFetcher` over httpx.

    POSTs the §7.5 body as JSON (or sends a bodiless GET for ``url_method: GET``), accepts JSON or
    YAML answers, and on any failure (network, non-2xx, unparsable or invalid SWML) retries once
    against `fallback_url` when one is given. Credentials in the URL (``user:pass@host``) become
    HTTP basic auth, as the SWML docs describe.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        user_agent: str = "callplane",
        max_bytes: int = _MAX_DOCUMENT_BYTES,
    ) -> None:
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._client = client
        self._user_agent = user_agent
        self._max_bytes = max_bytes

    async def fetch(
        self,
        url: str,
        body: dict[str, Any],
        *,
        method: str = "POST",
        fallback_url: str | None = None,
    ) -> SwmlDocument:
        try:
            return await self._fetch_one(url, body, method)
        except SwmlFetchError as exc:
            if not fallback_url:
                raise
            log.warning(
                "SWML fetch from %s failed (%s); trying fallback %s", url, exc, fallback_url
            )
            try:
                return await self._fetch_one(fallback_url, body, method)
            except SwmlFetchError as fallback_exc:
                raise SwmlFetchError(
                    f"{exc}; fallback also failed: {fallback_exc}", url=fallback_url
                ) from fallback_exc

    async def _fetch_one(self, url: str, body: dict[str, Any], method: str) -> SwmlDocument:
        if not url.lower().startswith(("http://", "https://")):
            raise SwmlFetchError(f"SWML URL must be http or https: {url!r}", url=url)
        verb = method.upper()
        if verb not in ("GET", "POST"):
            raise SwmlFetchError(f"SWML fetch method must be GET or POST, got {method!r}", url=url)
        headers = {
            "Accept": ", ".join(ACCEPTED_CONTENT_TYPES),
            "User-Agent": self._user_agent,
        }
        client = self._client or httpx.AsyncClient(timeout=self._timeout)
        try:
            request = client.build_request(
                verb,
                url,
                headers=headers,
                json=body if verb == "POST" else None,
                timeout=self._timeout,
            )
            response = await client.send(request, stream=True, follow_redirects=True)
            try:
                if not 200 <= response.status_code < 300:
                    raise SwmlFetchError(
                        f"SWML fetch from {url} answered HTTP {response.status_code}", url=url
                    )
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    content.extend(chunk)
                    if len(content) > self._max_bytes:
                        raise SwmlFetchError(
                            f"SWML document from {url} exceeds {self._max_bytes} bytes", url=url
                        )
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise SwmlFetchError(f"SWML fetch from {url} failed: {exc!r}", url=url) from exc
        finally:
            if self._client is None:
                await client.aclose()
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            # Other content types are tried anyway (many servers answer text/plain); the error
            # names the type when the text is not SWML.
            return load_document(bytes(content), content_type=content_type or None, origin=url)
        except SwmlError as exc:
            hint = (
                ""
                if content_type in ACCEPTED_CONTENT_TYPES
                else f" (content type {content_type or 'missing'!s})"
            )
            raise SwmlFetchError(f"invalid SWML from {url}{hint}: {exc}", url=url) from exc


def _guess_content_type(body: str) -> str:
    # The SWML docs: "if not set, the most likely type will be set based on the first
    # non-whitespace character".
    head = body.lstrip()[:1]
    if head in ("{", "["):
        return "application/json"
    if head == "<":
        return "application/xml"
    return "text/plain"


def _seconds_or_none(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise SwmlError(f"request.{name} must be a number of seconds, got {value!r}") from exc
    return None if seconds <= 0 else seconds  # 0 = no timeout


class _TooLarge(Exception):
    pass


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    content = bytearray()
    async for chunk in response.aiter_bytes():
        content.extend(chunk)
        if len(content) > max_bytes:
            raise _TooLarge(f"the response body exceeds {max_bytes} bytes")
    return bytes(content)


async def perform_request(
    params: Mapping[str, Any],
    *,
    client: httpx.AsyncClient | None = None,
    max_bytes: int = _MAX_DOCUMENT_BYTES,
) -> dict[str, Any]:
    """Run a SWML `request` with already-expanded params; return the variables it sets.

    Variables (swml.md §2.3): ``request_url``, ``request_result`` (``success`` for a 2xx answer,
    else ``failed``), ``return_value`` (= request_result), ``request_response_code``,
    ``request_response_body`` (text, ≤ 64 KB), ``request_response_headers`` (object keyed by
    lowercase header name, ≤ 64 entries; a name with a dash is read with brackets:
    ``${request_response_headers['content-type']}``) and, with ``save_variables``,
    ``request_response`` (the parsed JSON body). A body over ``max_bytes`` (read streaming,
    never whole) or a connection the target policy refuses is ``request_result: failed``.
    """
    url = str(params["url"])
    method = str(params["method"]).upper()
    if method not in ("GET", "POST", "PUT", "DELETE"):
        raise SwmlError(f"request.method must be GET, POST, PUT or DELETE, got {method!r}")
    headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
    content: bytes | None = None
    body = params.get("body")
    if body is not None and body != "":
        text = body if isinstance(body, str) else json.dumps(body)
        content = text.encode("utf-8")
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = (
                "application/json" if not isinstance(body, str) else _guess_content_type(text)
            )
    read_timeout = _seconds_or_none(params.get("timeout"), "timeout")
    connect_timeout = _seconds_or_none(params.get("connect_timeout"), "connect_timeout")
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    save = params.get("save_variables")
    save_variables = save is True or (isinstance(save, str) and save.lower() in ("true", "1"))

    out: dict[str, Any] = {"request_url": url}
    own_client = client is None
    http = client or httpx.AsyncClient()
    try:
        request = http.build_request(method, url, headers=headers, content=content, timeout=timeout)
        response = await http.send(request, stream=True, follow_redirects=True)
        try:
            raw = await _read_capped(response, max_bytes)
        finally:
            await response.aclose()
    except (httpx.HTTPError, _TooLarge) as exc:
        log.info("SWML request %s %s failed: %s", method, url, exc)
        out.update(request_result="failed", return_value="failed")
        return out
    finally:
        if own_client:
            await http.aclose()
    result = "success" if 200 <= response.status_code < 300 else "failed"
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    response_headers: dict[str, str] = {}
    for key, value in response.headers.items():
        if len(response_headers) >= _MAX_RESPONSE_HEADERS:
            break
        response_headers.setdefault(key.lower(), value)
    out.update(
        request_result=result,
        return_value=result,
        request_response_code=response.status_code,
        request_response_body=text[:_MAX_RESPONSE_BODY_CHARS],
        request_response_headers=response_headers,
    )
    if save_variables:
        try:
            out["request_response"] = json.loads(text)
        except ValueError:
            log.info("SWML request %s %s: save_variables set but body is not JSON", method, url)
    return out
