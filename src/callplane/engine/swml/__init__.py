"""The SWML interpreter (calling flavour), sans-IO with respect to calls.

The engine implements `SwmlHost` and creates one `SwmlInterpreter` per script run::

    interpreter = SwmlInterpreter(document, host, call=call_info, vars=None, envs=envs,
                                  params={}, fetcher=HttpSwmlFetcher())
    outcome = await interpreter.run()  # SwmlOutcome(kind="completed"|"hangup"|"returned"|"error")
    await interpreter.replace(new_document)  # REST `update` with new SWML
"""

from .document import (
    ALL_METHODS,
    CALL_METHODS,
    FLOW_METHODS,
    SwmlDocument,
    is_swml_var,
    load_document,
    validate_document,
)
from .errors import SwmlError, SwmlFetchError, SwmlMethodNotSupported
from .expressions import UNDEFINED, Scope, evaluate, evaluate_condition, expand, expand_string
from .interpreter import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_STEPS,
    OutcomeKind,
    SwmlHost,
    SwmlInterpreter,
    SwmlOutcome,
)
from .variables import METHOD_VARIABLES
from .web import (
    ACCEPTED_CONTENT_TYPES,
    HttpSwmlFetcher,
    SwmlFetcher,
    build_fetch_body,
    perform_request,
)

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "ALL_METHODS",
    "CALL_METHODS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_STEPS",
    "FLOW_METHODS",
    "METHOD_VARIABLES",
    "UNDEFINED",
    "HttpSwmlFetcher",
    "OutcomeKind",
    "Scope",
    "SwmlDocument",
    "SwmlError",
    "SwmlFetchError",
    "SwmlFetcher",
    "SwmlHost",
    "SwmlInterpreter",
    "SwmlMethodNotSupported",
    "SwmlOutcome",
    "build_fetch_body",
    "evaluate",
    "evaluate_condition",
    "expand",
    "expand_string",
    "is_swml_var",
    "load_document",
    "perform_request",
    "validate_document",
]
