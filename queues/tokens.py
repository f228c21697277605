"""API tokens: made with a random key shown once, kept as a hash, checked by the API's sign-in.

A key is 32 random bytes (URL-safe base64) behind a recognisable prefix: with that much entropy a
plain sha256 is as good as a slow password hash, and lets the key be found by an index.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from queues.models import ApiToken

KEY_PREFIX = "pgmqd_"
SHOWN_PREFIX_CHARS = 12
# last_used_at is written at most this often per token: not a write on every API request.
USE_RECORDED_EVERY = timedelta(minutes=1)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_token(user, *, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `user`, and its key: the only time the key is known."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=key[:SHOWN_PREFIX_CHARS], key_hash=key_hash(key))
    return token, key


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, looked up by the key's hash."""

    def authenticate_credentials(self, key: str):
        token = ApiToken.objects.select_related("user").filter(key_hash=key_hash(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > USE_RECORDED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token
