"""REST: GDPR export, erasure request and restore within the recovery window."""
from __future__ import annotations

import logging

import orjson
from aiohttp import web

from api.http import Call, Router
from api.models.users import LoginIn, PasswordIn
from server.read_models.privacy import ErasurePending, ExportDocument
from server.read_models.users import SignedIn

router = Router("privacy")
log = logging.getLogger("pulse.privacy")


@router.route("GET", "/users/me/export", name="users.me.export", response=ExportDocument, errors=(401,))
async def export_me(request: web.Request, call: Call):
    """Everything Pulse holds about the caller, as one JSON document (streamed)."""
    parts = call.services.privacy.export(call.user_id)
    first = await anext(parts)  # errors before the first byte still become problem+json
    response = web.StreamResponse(headers={
        "Content-Type": "application/json",
        "Content-Disposition": 'attachment; filename="pulse-export.json"',
        "Cache-Control": "no-store",
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await _write_part(response, first, leading=b"{")
        async for part in parts:
            await _write_part(response, part, leading=b",")
        await response.write(b"}")
    except Exception:
        # The status line is gone: cut the connection so the client gets a broken
        # document rather than a valid-looking incomplete one.
        log.exception("export of a user failed mid-stream")
        if request.transport is not None:
            request.transport.close()
        raise
    await response.write_eof()
    return response


async def _write_part(response: web.StreamResponse, part, *, leading: bytes) -> None:
    await response.write(leading + orjson.dumps(part.name) + b":")
    if part.pages is None:
        await response.write(orjson.dumps(part.value))
        return
    await response.write(b"[")
    first = True
    async for page in part.pages:
        if not page:
            continue
        chunk = b",".join(orjson.dumps(item) for item in page)
        await response.write(chunk if first else b"," + chunk)
        first = False
    await response.write(b"]")


@router.route("DELETE", "/users/me", name="users.me.delete", body=PasswordIn, response=ErasurePending, status=202,
              errors=(400, 401, 415, 429, 503))
async def delete_me(request: web.Request, call: Call[PasswordIn, None]):
    """Request erasure: hidden and logged out at once, purged after the recovery window."""
    return await call.services.privacy.request_erasure(call.user_id, call.body.password, call.client)


@router.route("POST", "/auth/restore", name="auth.restore", body=LoginIn, response=SignedIn, auth=False,
              errors=(400, 401, 429, 503))
async def restore(request: web.Request, call: Call[LoginIn, None]):
    """Cancel a pending erasure with the account's credentials, inside the recovery window."""
    user, token = await call.services.privacy.restore(call.body.login, call.body.password, call.client)
    return SignedIn(user=user, token=token)
