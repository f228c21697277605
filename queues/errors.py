"""Error answers: a page for people, JSON (`{"detail": ...}`) for anything under /api/, whichever
part of the dashboard gives them (the middleware, Django's own 400/403/404/500 handlers)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, get_resolver
from django.views import defaults


def wants_json(request: HttpRequest) -> bool:
    """Under the API's address (of any watched database: the prefix is off path_info by then)."""
    return request.path_info.startswith(api_root())


def api_root() -> str:
    """Where the API is mounted: "/api/", or "/pgmq/api/" in a project that includes the app under pgmq/."""
    try:
        return "/" + get_resolver().reverse("api-schema").removesuffix("v1/schema/")
    except NoReverseMatch:
        return "/api/"


def error_answer(
    request: HttpRequest, status: int, detail: str, template: str, context: dict | None = None, **extra: object
) -> HttpResponse:
    """`detail` as JSON for the API, else `template` rendered with `context`; `extra` goes in the JSON."""
    if wants_json(request):
        return JsonResponse({"detail": detail, **extra}, status=status)
    return render(request, template, context if context is not None else {"exception": detail}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not wants_json(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        detail = (
            f"the request body is too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes "
            "(DATA_UPLOAD_MAX_MEMORY_SIZE); nothing was done"
        )
    else:
        detail = "the request cannot be used (a malformed header or body); nothing was done"
    return JsonResponse({"detail": detail}, status=400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"detail": str(exception) or "your role does not allow this"}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"detail": "there is nothing at this address of the API: see /api/v1/schema/"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if wants_json(request):
        return JsonResponse(
            {"detail": "the dashboard failed to answer (a server error, logged); nothing more is known here"},
            status=500,
        )
    return defaults.server_error(request)
