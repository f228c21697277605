"""Sign-in by a trusted reverse proxy (oauth2-proxy and the like), off unless
DASHBOARD_REMOTE_USER_HEADER names the header that proxy sets to the signed-in user's name.

Only safe when the dashboard is reachable through that proxy alone, and the proxy always sets or
strips the header: anyone who can reach gunicorn directly could send it. (gunicorn drops headers
spelled with underscores, so `X_Forwarded_User` cannot pose as `X-Forwarded-User`.)
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.middleware import PersistentRemoteUserMiddleware
from django.contrib.auth.models import Group
from django.core.exceptions import MiddlewareNotUsed

from queues.access import DatabaseScopedPermissions


def meta_key(header: str) -> str:
    """The WSGI environ key of a header: X-Forwarded-User is HTTP_X_FORWARDED_USER; REMOTE_USER is
    the server's own variable."""
    if header.upper() == "REMOTE_USER":
        return "REMOTE_USER"
    return "HTTP_" + header.upper().replace("-", "_")


class ProxyHeaderUserMiddleware(PersistentRemoteUserMiddleware):
    """Signs in the user the proxy names. Persistent: a request without the header (the proxy's own
    health checks, say) keeps the session instead of signing the user out."""

    def __init__(self, get_response) -> None:
        if not settings.REMOTE_USER_HEADER:
            raise MiddlewareNotUsed
        super().__init__(get_response)
        self.header = meta_key(settings.REMOTE_USER_HEADER)


class ProxyHeaderUserBackend(DatabaseScopedPermissions, RemoteUserBackend):
    """A user the proxy vouches for is created on first sight, in DASHBOARD_REMOTE_USER_GROUP
    (Viewer unless set): an admin gives more in Django's admin."""

    def configure_user(self, request, user, created=True):
        if created and settings.REMOTE_USER_GROUP:
            user.groups.add(Group.objects.get(name=settings.REMOTE_USER_GROUP))
        return user
