"""Strict reading of the environment for settings.py.

Anything missing or malformed stops the process with one line naming the variable, instead of a
traceback from deep inside Django or psycopg (SystemExit prints its message and exits with 1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import NoReturn

import psycopg
from psycopg.conninfo import conninfo_to_dict

# App code at settings time: queues.rules imports nothing of Django or of the app.
from queues.rules import AlertRule, HealthRule, RulesFileError, read_alert_rules, read_health_rules

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
INSECURE_KEY_PREFIX = "django-insecure"


def fail(message: str) -> NoReturn:
    raise SystemExit(f"configuration error: {message}")


def text(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def boolean(name: str, default: bool) -> bool:
    if name not in os.environ:
        return default
    value = os.environ[name].strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    fail(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {os.environ[name]!r}")


def integer(name: str, default: int, *, minimum: int = 0) -> int:
    raw = text(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        fail(f"{name} must be a whole number; got {raw!r}")
    if value < minimum:
        fail(f"{name} must be at least {minimum}; got {value}")
    return value


def header_name(name: str) -> str:
    """An HTTP header's name, e.g. X-Forwarded-For, or "" when unset."""
    value = text(name)
    # gunicorn drops headers spelled with underscores: such a name would never arrive.
    if value and not re.fullmatch(r"[A-Za-z0-9-]+", value):
        fail(f"{name} must be a header name of letters, digits and dashes, e.g. X-Forwarded-For; got {value!r}")
    return value


def word_list(name: str, default: list[str]) -> list[str]:
    raw = text(name)
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def queue_pairs(name: str) -> dict[str, str]:
    """`parked=billing, failed-mail=mail`: dead-letter queue = the queue its messages go back to."""
    pairs = {}
    for item in word_list(name, default=[]):
        dead_letters, _, queue = (part.strip() for part in item.partition("="))
        if not dead_letters or not queue:
            fail(f"{name}: {item!r} is not a pair; write dead-letter queue=queue, e.g. parked=billing")
        pairs[dead_letters] = queue
    return pairs


MAX_REDACT_PATH_KEYS = 8


def json_paths(name: str) -> list[tuple[str, tuple[str, ...]]]:
    """`customer.email, card.*, headers.authorization` as (column, keys): a path is in the message
    unless it starts with `message.` or `headers.`; `*` stands for any key or array element; a
    backslash makes the next character part of the key (`meta\\.email` is the key "meta.email",
    `\\,` a comma, `\\\\` a backslash)."""
    paths = []
    for raw, keys in _escaped_paths(text(name)):
        if not keys or any(not key or "\x00" in key for key in keys):
            fail(f"{name}: {raw!r} is not a JSON path; write keys joined by dots, e.g. customer.email or card.*")
        column = keys.pop(0) if keys[0] in ("message", "headers") and len(keys) > 1 else "message"
        if len(keys) > MAX_REDACT_PATH_KEYS:  # each key doubles the SQL that redacts it (arrays on the way)
            fail(f"{name}: {raw!r} has more than {MAX_REDACT_PATH_KEYS} keys; use * for the levels in between")
        paths.append((column, tuple(keys)))
    return paths


def _escaped_paths(value: str) -> list[tuple[str, list[str]]]:
    """Comma-separated paths of dot-separated keys, each character after a backslash taken as it is."""
    paths: list[tuple[str, list[str]]] = []
    raw, keys, key, escaped = "", [], "", False
    for character in value + ",":
        if escaped:
            key, escaped = key + character, False
        elif character == "\\":
            escaped = True
        elif character == ".":
            keys.append(key.strip())
            key = ""
        elif character == ",":
            keys.append(key.strip())
            if raw.strip():
                paths.append((raw.strip(), keys))
            raw, keys, key = "", [], ""
            continue
        else:
            key += character
        raw += character
    return paths


def secret_key(*, debug: bool) -> str:
    key = os.environ.get("DJANGO_SECRET_KEY", "")
    if not key:
        if debug:
            return INSECURE_KEY_PREFIX + "-development-only-key-never-use-in-production"
        fail(
            "DJANGO_SECRET_KEY is not set; with DJANGO_DEBUG off the dashboard needs a real secret key "
            "(50+ random characters, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(50))'`)"
        )
    # The same bar as `manage.py check --deploy` (security.W009).
    if not debug and (len(key) < 50 or len(set(key)) < 5 or key.startswith(INSECURE_KEY_PREFIX)):
        fail("DJANGO_SECRET_KEY is too weak for DJANGO_DEBUG off: use 50+ random characters")
    return key


def redacted_url(url: str) -> str:
    """The URL as it can be shown in a log line or on a page: any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def database(
    name: str, url: str, *, schema: str | None, statement_timeout_ms: int, lock_timeout_ms: int, pooler: bool = False
) -> dict:
    """Django DATABASES entry for a postgresql:// URL, every connection bounded in time.

    libpq itself parses the URL, so everything it accepts (sslmode, a socket directory in
    ?host=, ...) works. `schema`, when given, becomes the connection's only search_path: the
    dashboard's own tables then land there and never in `public` or `pgmq`. With `pooler` (the URL
    leads to PgBouncer or the like), the same settings are set at the start of every transaction
    instead of once per connection (dashboard/pooled_postgresql).
    """
    if not url.startswith(("postgresql://", "postgres://")):
        fail(f"{name} must be a postgresql:// URL; got {redacted_url(url)!r}")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        fail(f"{name} is not a valid PostgreSQL URL ({str(error).strip()}): {redacted_url(url)!r}")
    if not params.get("dbname"):
        fail(f"{name} names no database: add it to the path, e.g. postgresql://user@host:5432/mydb")

    # jit off: the dashboard's statements are small, but the redacting SQL is estimated as costly
    # (100 rows per nested JSON step) and PostgreSQL built with LLVM spent 2 s compiling each one.
    server_settings = {
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
        "jit": "off",
        **({"search_path": schema} if schema else {}),
    }
    server_options = [params.pop("options", "")]
    if not pooler:
        server_options += [f"-c {setting}={value}" for setting, value in server_settings.items()]
    options = {
        "application_name": "pgmq-dashboard",
        "connect_timeout": "5",
        **{key: value for key, value in params.items() if key not in {"dbname", "user", "password", "host", "port"}},
    }
    if any(server_options):
        options["options"] = " ".join(option for option in server_options if option)
    pooled = {
        "ENGINE": "dashboard.pooled_postgresql",
        "TRANSACTION_SETTINGS": server_settings,
        # A cursor declared WITH HOLD stays in its server session, which the next transaction may not get.
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }
    return {
        "ENGINE": "django.db.backends.postgresql",
        # Checked on every new direct connection (dashboard/databases.py, settings_kept).
        **(pooled if pooler else {"STARTUP_SETTINGS": server_settings}),
        "NAME": params["dbname"],
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
        "OPTIONS": options,
        # Persistent connections, checked before reuse: after a database restart the next request
        # reconnects by itself.
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


DATABASE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
EXTRA_DATABASE_PREFIX = "PGMQ_DATABASE_URL_"


def watched_databases() -> dict[str, tuple[str, str]]:
    """The pgmq databases to watch, name -> (environment variable, URL), the first one first.

    PGMQ_DATABASE_URL is the first (named by PGMQ_DATABASE_NAME, default "main"); every
    PGMQ_DATABASE_URL_<NAME> adds one named <name> (lower case, _ as -), e.g.
    PGMQ_DATABASE_URL_STAGING. Names appear in URLs (/db/staging/...) and in stored history.
    """
    first_name = text("PGMQ_DATABASE_NAME", "main").lower()
    found = {first_name: ("PGMQ_DATABASE_URL", text("PGMQ_DATABASE_URL"))}
    for variable in sorted(os.environ):
        if not variable.startswith(EXTRA_DATABASE_PREFIX) or not text(variable):
            continue
        name = variable.removeprefix(EXTRA_DATABASE_PREFIX).lower().replace("_", "-")
        if name in found:
            fail(f"{variable} names the database {name!r} twice (PGMQ_DATABASE_NAME is {first_name!r})")
        found[name] = (variable, text(variable))
    for name, (variable, _url) in found.items():
        if not DATABASE_NAME_PATTERN.fullmatch(name):
            source = "PGMQ_DATABASE_NAME" if variable == "PGMQ_DATABASE_URL" else variable
            fail(f"{source}: the database name {name!r} must be 1-40 letters, digits or dashes")
    return found


DATABASE_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "grey")
DATABASE_LABEL_PREFIX = "DASHBOARD_DATABASE_LABEL_"
DATABASE_COLOUR_PREFIX = "DASHBOARD_DATABASE_COLOUR_"
DATABASE_LABEL_MAX = 40


def database_tags(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Each watched database's label and colour for the header, name -> (label, colour), from
    DASHBOARD_DATABASE_LABEL_<NAME> and DASHBOARD_DATABASE_COLOUR_<NAME> (<NAME> as in
    PGMQ_DATABASE_URL_<NAME>; the first database's too). Only databases with a label have one."""
    by_variable_name = {name.upper().replace("-", "_"): name for name in names}
    labels: dict[str, str] = {}
    colours: dict[str, str] = {}
    for variable in sorted(os.environ):
        for prefix, found in ((DATABASE_LABEL_PREFIX, labels), (DATABASE_COLOUR_PREFIX, colours)):
            if not variable.startswith(prefix):
                continue
            name = by_variable_name.get(variable.removeprefix(prefix))
            if name is None:
                fail(f"{variable} names no watched database (they are {', '.join(by_variable_name.values())})")
            found[name] = text(variable)
    for name, label in labels.items():
        if len(label) > DATABASE_LABEL_MAX:
            fail(f"{DATABASE_LABEL_PREFIX}{name.upper().replace('-', '_')}: at most {DATABASE_LABEL_MAX} characters")
    for name, colour in colours.items():
        if colour.lower() not in DATABASE_COLOURS:
            variable = f"{DATABASE_COLOUR_PREFIX}{name.upper().replace('-', '_')}"
            fail(f"{variable} is {colour!r}: one of {', '.join(DATABASE_COLOURS)}")
    return {name: (label, colours.get(name, "grey").lower()) for name, label in labels.items() if label}


def health_rules(name: str) -> tuple[HealthRule, ...]:
    """The health rules in the TOML file named by the variable, the built-in default last."""
    try:
        return read_health_rules(text(name), named_by=name)
    except RulesFileError as error:
        fail(str(error))


def alert_rules(name: str) -> tuple[AlertRule, ...]:
    """The alert rules in the TOML file named by the variable; a webhook written "$VARIABLE" is
    read from the environment."""
    try:
        return read_alert_rules(text(name), named_by=name, environ=os.environ)
    except RulesFileError as error:
        fail(str(error))
