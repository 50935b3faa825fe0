"""REST: registration, login, logout, own and public profiles."""
from __future__ import annotations

from aiohttp import web

from api.http import Call, Router
from api.models.users import LoginIn, ProfilePatchIn, RegisterIn
from server.read_models.users import OwnUser, PublicUser, SignedIn

router = Router("users")


@router.route("POST", "/auth/register", name="auth.register", body=RegisterIn, response=SignedIn,
              status=201, auth=False, errors=(400, 409, 413, 415, 429, 503))
async def register(request: web.Request, call: Call[RegisterIn, None]):
    """Create an account and a session."""
    b = call.body
    user, token = await call.services.users.register(
        email=b.email, username=b.username, password=b.password, display_name=b.display_name, client=call.client,
    )
    return SignedIn(user=user, token=token)


@router.route("POST", "/auth/login", name="auth.login", body=LoginIn, response=SignedIn, auth=False,
              errors=(400, 401, 429, 503))
async def login(request: web.Request, call: Call[LoginIn, None]):
    """Log in with email or username."""
    user, token = await call.services.users.login(login=call.body.login, password=call.body.password,
                                                  client=call.client)
    return SignedIn(user=user, token=token)


@router.route("POST", "/auth/logout", name="auth.logout", status=204, errors=(401,))
async def logout(request: web.Request, call: Call):
    """Revoke the token used for this request."""
    await call.services.users.logout(call.principal)
    return None


@router.route("POST", "/auth/logout-all", name="auth.logout_all", status=204, errors=(401,))
async def logout_all(request: web.Request, call: Call):
    """Revoke every session of the caller, this one included; their sockets are disconnected."""
    await call.services.users.logout_all(call.principal)
    return None


@router.route("GET", "/users/me", name="users.me", response=OwnUser, errors=(401,))
async def get_me(request: web.Request, call: Call):
    """The caller's own user, with email."""
    return await call.services.users.get_me(call.user_id)


@router.route("PATCH", "/users/me", name="users.me.update", body=ProfilePatchIn, response=OwnUser,
              errors=(400, 401, 415))
async def update_me(request: web.Request, call: Call[ProfilePatchIn, None]):
    """Change display name, bio or avatar."""
    return await call.services.users.update_me(call.user_id, call.body.model_dump(exclude_unset=True))


@router.route("GET", "/users/{user}", name="users.get", response=PublicUser, errors=(401, 404))
async def get_user(request: web.Request, call: Call):
    """A public profile, by id or username."""
    return await call.services.users.get_public(request.match_info["user"], viewer_id=call.user_id)
