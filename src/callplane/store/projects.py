"""Projects (tenants): creating them with fresh secrets, and getting the store ready to serve.

A project has an id (the HTTP Basic user), a name (for operators), an API token (the Basic
password: controls its calls) and a webhook signing key (what its receivers hold to verify
``X-SignalWire-Signature``; it cannot control calls). Secrets are shown to the operator only when
they are generated, once: :func:`prepare_projects` returns them as messages to print.

Imports nothing from callplane but the store.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from pathlib import Path

from callplane.store.rows import ProjectRow
from callplane.store.sqlite import Store

log = logging.getLogger("callplane.store.projects")

LEGACY_CREDENTIALS = "credentials.json"


def new_token() -> str:
    return "PT" + secrets.token_hex(24)


def new_signing_key() -> str:
    return "PSK" + secrets.token_hex(24)


def new_project(
    name: str, *, project_id: str | None = None, token: str | None = None
) -> ProjectRow:
    """A project row with generated secrets (and id) where none are given."""
    if not name.strip():
        raise ValueError("a project needs a non-empty name")
    return ProjectRow(
        id=project_id or str(uuid.uuid4()),
        name=name,
        token=token or new_token(),
        signing_key=new_signing_key(),
        created_at=time.time(),
    )


def describe_new(row: ProjectRow, *, token_generated: bool = True) -> str:
    """The one line that shows a new project's generated secrets."""
    token = f"  token {row['token']}" if token_generated else ""
    return (
        f"callplane: new project {row['id']} ({row['name']}){token}"
        f"  webhook signing key {row['signing_key']}"
    )


def import_legacy_credentials(store: Store, data_dir: Path) -> list[str]:
    """Move the single project of a pre-projects ``credentials.json`` into the store; returns the
    lines to print about it (its new signing key)."""
    messages: list[str] = []
    path = data_dir / LEGACY_CREDENTIALS
    if not path.exists():
        return messages
    try:
        saved = json.loads(path.read_text())
        project_id, token = str(saved["project"]), str(saved["token"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot import %s (%s); left in place", path, exc)
        return messages
    if store.get_project(project_id) is None:
        row = new_project(project_id, project_id=project_id, token=token)
        store.add_project(row)
        messages.append(
            describe_new(row, token_generated=False)
            + " (imported from credentials.json: webhooks are now signed with this key)"
        )
    # The store holds the secret now; a second copy on disk would only be one more to protect.
    path.unlink()
    return messages


def prepare_projects(
    store: Store, data_dir: Path, *, project: str = "", token: str = ""
) -> tuple[ProjectRow, list[str]]:
    """Get the projects ready for ``serve`` and return the default project (the one inbound SIP
    calls belong to) with the lines to print about secrets generated now.

    ``project``/``token`` are ``--project``/``--token``: a project named by id or name is the
    default; unknown, it is created (with ``token``, or a generated one); a ``token`` that differs
    from the stored one replaces it. Without them the default is the oldest project, and an empty
    store gets a generated one.
    """
    messages = import_legacy_credentials(store, data_dir)
    if project:
        row = store.find_project(project)
        if row is None:
            row = new_project(project, project_id=project, token=token or None)
            store.add_project(row)
            messages.append(describe_new(row, token_generated=not token))
            return row, messages
    else:
        existing = store.list_projects()
        if not existing:
            row = new_project("default", token=token or None)
            store.add_project(row)
            messages.append(describe_new(row, token_generated=not token))
            return row, messages
        row = existing[0]
    if token and token != row["token"]:
        store.set_project_token(row["id"], token)
        row = ProjectRow({**row, "token": token})
    return row, messages
