"""A plain HTTP client with cookies, for tests that talk to a dashboard in another process."""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from tests.pages import parse


@dataclass
class Response:
    status: int
    url: str  # after redirects
    text: str
    headers: dict[str, str]


class HttpSession:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def request(
        self, path: str, data: dict[str, str] | bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        """GET, or POST a form (a dict) or a body of bytes as it is."""
        body = data if isinstance(data, bytes) or data is None else urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return Response(response.status, response.geturl(), response.read().decode(), dict(response.headers))
        except urllib.error.HTTPError as error:
            return Response(error.code, error.geturl(), error.read().decode(), dict(error.headers))

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.request(path, headers=headers)

    def csrf_token(self) -> str:
        """The CSRF token a page of the dashboard set in the cookie."""
        token = next((cookie.value for cookie in self.cookies if cookie.name == "csrftoken"), None)
        assert token, "no CSRF cookie yet: get a page with a form first"
        return token

    def post(self, path: str, data: dict[str, str]) -> Response:
        """A form POST with the CSRF token a page of the dashboard set in the cookie."""
        return self.request(path, {"csrfmiddlewaretoken": self.csrf_token(), **data})

    def sign_in(self, username: str, password: str) -> Response:
        form = parse(self.get("/login/").text)
        token = form.select_one("input[name=csrfmiddlewaretoken]")["value"]
        response = self.request("/login/", {"csrfmiddlewaretoken": token, "username": username, "password": password})
        assert not response.url.startswith(self.base_url + "/login/"), f"sign-in as {username} failed"
        return response

    def set_cookie(self, name: str, value: str) -> None:
        host = urllib.parse.urlsplit(self.base_url).hostname
        self.cookies.set_cookie(
            http.cookiejar.Cookie(
                0, name, value, None, False, host, False, False, "/", True, False, None, False, None, None, {}
            )
        )
