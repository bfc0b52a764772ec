"""Errors raised by the SWML loader, expression evaluator and interpreter."""

from __future__ import annotations


class SwmlError(Exception):
    """A SWML document, expression or execution problem.

    `path` locates the offending node in the document (``sections.main[2].play.url``) or the
    expression text, so an engine can surface it as a 422 ``attribute`` or in a log line.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.message = message
        # Mutable: the interpreter fills it in when an error raised deep inside (an expression,
        # a host method) reaches the method that caused it.
        self.path = path
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SwmlMethodNotSupported(SwmlError):
    """Raised by a `SwmlHost` for a call-facing method the engine does not implement (yet)."""

    def __init__(self, method: str, detail: str | None = None) -> None:
        self.method = method
        text = f"SWML method {method} is not supported by callplane yet"
        super().__init__(f"{text}: {detail}" if detail else text)


class SwmlFetchError(SwmlError):
    """A SWML document could not be fetched or parsed from a URL (after any fallback)."""

    def __init__(self, message: str, url: str | None = None) -> None:
        self.url = url
        super().__init__(message)
