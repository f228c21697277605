"""Sign-in limits: failed passwords slow down the (name, address) pair and the address they came
from, never anyone else.

A pair may fail SIGN_IN_FAILURE_LIMIT times and an address SIGN_IN_ADDRESS_FAILURE_LIMIT times
(for any names) freely; after that each further attempt must wait 1, 2, 4 ... seconds after the
last failure, at most SIGN_IN_MAX_DELAY_SECONDS. Failures are forgotten after SIGN_IN_FAILURE_WINDOW
without one; a pair's also when it signs in, an address's never (an attacker signing in to an
account of their own must not reset the budget they stuff credentials with).

An attempt is counted as a failure before its password is checked, in one short transaction with
the check, so parallel guesses cannot slip past a limit together; signing in takes the count back.
An attempt that must wait is refused unchecked and not counted, so trying early costs nothing.
Every page that signs in through Django's authenticate() (/login/, /admin/login/) is limited by
SignInLimitBackend, and answered 429 by SignInLimitMiddleware.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv6Address, IPv6Network, ip_address

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from dashboard.client_address import client_address
from queues.models import SignInFailures

log = logging.getLogger(__name__)

NAME, ADDRESS = "name", "address"


@dataclass
class SignInAttempt:
    username: str
    address: str
    at: datetime
    checked: bool  # False: refused while waiting, the password never looked at
    wait: float  # seconds until the next attempt may be checked (if this one fails)
    limited_by: str | None  # NAME or ADDRESS: whose failures make it wait
    address_failed_before: datetime | None = None  # the address's last failure before this attempt
    succeeded: bool = False


def limited_address(address: str) -> str:
    """What the limits count by: the address, or for IPv6 its /64, which one holder gets whole and
    can pick any address of."""
    try:
        parsed = ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, IPv6Address):
        return str(IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def delay_seconds(failures: int, limit: int) -> float:
    """How long after the last of `failures` the next attempt must wait: nothing below the limit,
    then 1 s, doubling with each failure up to the cap."""
    if failures < limit:
        return 0
    return min(2 ** min(failures - limit, 30), settings.SIGN_IN_MAX_DELAY_SECONDS)


def begin_attempt(username: str, address: str) -> SignInAttempt:
    """Refuse the attempt if the address or the pair must still wait, or else count it as a failure."""
    limits = {ADDRESS: settings.SIGN_IN_ADDRESS_FAILURE_LIMIT, NAME: settings.SIGN_IN_FAILURE_LIMIT}
    SignInFailures.objects.filter(last_failed_at__lt=timezone.now() - settings.SIGN_IN_FAILURE_WINDOW).delete()
    with transaction.atomic(using=settings.DASHBOARD_DATABASE_ALIAS):
        # The address's row is locked first, as in take_back, so two attempts never wait on each other in a
        # circle; the time read once both are held, so no failure counted meanwhile lies in its future.
        rows = {
            kind: SignInFailures.objects.select_for_update().get_or_create(
                address=address, username=name, defaults={"failures": 0, "last_failed_at": timezone.now()}
            )[0]
            for kind, name in ((ADDRESS, None), (NAME, username))
        }
        now = timezone.now()
        for kind, row in rows.items():
            if row.last_failed_at < now - settings.SIGN_IN_FAILURE_WINDOW:
                row.failures = 0
            delay = delay_seconds(row.failures, limits[kind])
            wait = (row.last_failed_at + timedelta(seconds=delay) - now).total_seconds() if delay else 0
            if wait > 0:
                transaction.set_rollback(True)  # a refused attempt leaves no row behind
                return SignInAttempt(username, address, now, checked=False, wait=wait, limited_by=kind)
        address_failed_before = rows[ADDRESS].last_failed_at if rows[ADDRESS].failures else None
        waits = {}
        for kind, row in rows.items():
            row.failures += 1
            row.last_failed_at = now
            row.save(update_fields=["failures", "last_failed_at"])
            waits[kind] = delay_seconds(row.failures, limits[kind])
    limited_by = max(waits, key=waits.__getitem__)
    return SignInAttempt(
        username,
        address,
        now,
        checked=True,
        wait=waits[limited_by],
        limited_by=limited_by if waits[limited_by] else None,
        address_failed_before=address_failed_before,
    )


def take_back(attempt: SignInAttempt) -> None:
    """The attempt signed in: it was no failure, and the pair's earlier failures are forgotten."""
    with transaction.atomic(using=settings.DASHBOARD_DATABASE_ALIAS):
        _take_back(attempt)


def _take_back(attempt: SignInAttempt) -> None:
    address_row = SignInFailures.objects.select_for_update().filter(address=attempt.address, username=None).first()
    SignInFailures.objects.filter(address=attempt.address, username=attempt.username).delete()
    if address_row is None:  # forgotten meanwhile, or deleted by an administrator
        return
    address_row.failures -= 1
    if address_row.failures <= 0:
        address_row.delete()
        return
    if address_row.last_failed_at == attempt.at and attempt.address_failed_before:
        address_row.last_failed_at = attempt.address_failed_before  # no failure since: as it was before
    address_row.save(update_fields=["failures", "last_failed_at"])


class SignInLimitBackend:
    """First in AUTHENTICATION_BACKENDS: counts every password attempt and refuses one that must
    wait (PermissionDenied stops Django from asking the backends that check passwords). It has no
    get_user, so no session is ever tied to it (force_login takes the first backend that has one)."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: object
    ) -> None:
        if request is None or username is None or password is None:
            return  # not a password sign-in (a proxy's header, say)
        attempt = begin_attempt(username, limited_address(client_address(request)))
        request.sign_in_attempt = attempt
        if not attempt.checked:
            raise PermissionDenied


def take_back_on_sign_in(sender: object, request: HttpRequest | None, user: object, **kwargs: object) -> None:
    """user_logged_in's receiver (connected in QueuesConfig.ready)."""
    attempt = getattr(request, "sign_in_attempt", None)
    if attempt is not None and attempt.checked and not attempt.succeeded:
        take_back(attempt)
        attempt.succeeded = True


class SignInLimitMiddleware:
    """A failed or refused sign-in after which the next one must wait is answered 429 with
    Retry-After, on whichever page it was tried."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        attempt: SignInAttempt | None = getattr(request, "sign_in_attempt", None)
        if attempt is None or attempt.succeeded or attempt.wait <= 0:
            return response
        if attempt.checked:
            log.warning(
                "sign-in for %r from %s failed; too many failures for the %s: the next attempt waits %g s",
                attempt.username,
                attempt.address,
                attempt.limited_by,
                attempt.wait,
            )
        return waiting_response(request, attempt)


def waiting_response(request: HttpRequest, attempt: SignInAttempt) -> HttpResponse:
    retry_after = math.ceil(attempt.wait)
    response = render(
        request,
        "registration/locked_out.html",
        {
            "attempt": attempt,
            "retry_after": retry_after,
            "retry_at": attempt.at + timedelta(seconds=retry_after),
        },
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response
