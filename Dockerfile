# The dashboard under gunicorn, for your own PostgreSQL (no embedded database, no demo): the wheel
# built from this repository, installed into /venv, with its `pgmq-dashboard` command.
#   docker build -t pgmq-dashboard .
#   docker run -p 8000:8000 -e PGMQ_DATABASE_URL=postgresql://... -e DJANGO_SECRET_KEY=... \
#              -e DJANGO_ALLOWED_HOSTS=dashboard.example.com pgmq-dashboard
# BASE_IMAGE: any Debian-like image with Python 3.11 as `python` and the venv module (scripts/image_check.py
# builds on a local one where no registry can be reached).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /venv
COPY requirements.txt .
RUN /venv/bin/pip install -r requirements.txt
COPY scripts/fetch_static.py scripts/
RUN /venv/bin/python scripts/fetch_static.py
COPY . .
RUN /venv/bin/pip install --no-deps .
# collectstatic reads the settings but contacts no database: placeholders are enough here.
RUN DJANGO_SECRET_KEY="build-only-$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    PGMQ_DATABASE_URL=postgresql://build@localhost/build DASHBOARD_STATIC_ROOT=/app/staticfiles \
    /venv/bin/pgmq-dashboard manage collectstatic --noinput --verbosity 0

FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 PATH=/venv/bin:$PATH GUNICORN_BIND=0.0.0.0:8000 DASHBOARD_STATIC_ROOT=/app/staticfiles
RUN useradd --system --uid 10001 --no-create-home dashboard
WORKDIR /app
COPY --from=build /venv /venv
COPY --from=build /app /app
USER dashboard
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Run `pgmq-dashboard migrate` once per release (a job or an init container; CHANGELOG.md says what
# each release's migrations do), then this; `pgmq-dashboard sample` and `run-jobs` beside it.
CMD ["pgmq-dashboard", "serve"]
