"""Request bodies of the users and auth endpoints."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is the
# mail server's business.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    return value


Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254), AfterValidator(_check_email)]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{3,30}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


class RegisterIn(BaseModel):
    email: Email
    username: Username
    password: Password
    display_name: DisplayName | None = None


class LoginIn(BaseModel):
    login: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=254)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ProfilePatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: DisplayName = None  # may be left out, not cleared: null is 400
    bio: Annotated[str, StringConstraints(max_length=500)] | None = None
    avatar_url: Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://\S+$")] | None = None


class PasswordIn(BaseModel):
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
