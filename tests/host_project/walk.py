"""Run inside the host project (DJANGO_SETTINGS_MODULE=tests.host_project.settings): a user of the
project, in its Operator group, signs in on the project's own page and walks the mounted dashboard.
Prints what a person would check, one JSON object, for tests/test_mounted_app.py to assert on."""

import json
import sys

import django

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.test import Client  # noqa: E402

from queues.tokens import issue_token  # noqa: E402

queue = sys.argv[1]
user = User.objects.create_user("host-oncall", password="a-long-host-password-42")
user.groups.add(Group.objects.get(name="Operator"))
client = Client()
seen = {"signed_out": client.get("/pgmq/").headers.get("Location", "")}
signed_in = client.post("/accounts/login/", {"username": "host-oncall", "password": "a-long-host-password-42"})
seen["sign_in"] = signed_in.status_code
overview = client.get("/pgmq/")
seen["overview"] = [overview.status_code, overview.content.decode()]
page = client.get(f"/pgmq/queues/{queue}/")
seen["queue"] = [page.status_code, page.content.decode()]
sent = client.post(f"/pgmq/queues/{queue}/send/", {"message": '{"from": "the host"}', "delay_s": "0"})
seen["send"] = [sent.status_code, sent.headers.get("Location", "")]
api = client.get(f"/pgmq/api/v1/queues/{queue}/")
seen["api"] = [api.status_code, api.json() if api.status_code == 200 else api.content.decode()]
_token, key = issue_token(user, name="host script")
by_token = Client().get(f"/pgmq/api/v1/queues/{queue}/", headers={"Authorization": f"Token {key}"})
seen["api_by_token"] = by_token.status_code
audit = client.get("/pgmq/audit/")
seen["audit"] = [audit.status_code, audit.content.decode()]
missing = client.get("/pgmq/api/v1/no-such-thing/")
seen["api_missing"] = [missing.status_code, missing.headers.get("Content-Type", "")]
seen["host_page"] = client.get("/").content.decode()
leaving = User.objects.create_user("host-leaver")
issue_token(leaving, name="the leaver's script")
leaving.delete()
seen["left"] = User.objects.filter(username="host-leaver").exists()
print(json.dumps(seen))
