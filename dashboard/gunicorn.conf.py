"""gunicorn settings for the dashboard (Dockerfile, `make run`, and production).

Database connections: each worker thread keeps at most one connection per database alias (`pgmq`
and `default`, even when both are the same database), so one gunicorn server opens at most
WEB_CONCURRENCY x GUNICORN_THREADS x 2 connections: 16 with the defaults.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Load the app once in the master: a configuration error then stops gunicorn with its one-line
# message instead of every worker failing to boot in a loop.
preload_app = True
timeout = 30
graceful_timeout = 10
accesslog = "-"
errorlog = "-"
# gunicorn's control socket lives in $HOME by default, shared by every gunicorn of the user.
control_socket_disable = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn would take X-Forwarded-Proto (and two more) from any client on forwarded_allow_ips as
# the request's scheme: only the header DASHBOARD_PROXY_SSL_HEADER names, as Django does.
_proxy_ssl_header = os.environ.get("DASHBOARD_PROXY_SSL_HEADER", "").strip()
secure_scheme_headers = {_proxy_ssl_header.upper(): "https"} if _proxy_ssl_header else {}
