"""Schemathesis hooks for Meridian's REST API (see run.sh)."""

import os

import requests
import schemathesis

BASE = os.environ["MERIDIAN_URL"]


@schemathesis.auth(refresh_interval=10)
class FreshUser:
    """A device token of a freshly registered user.

    Fetched again whenever a request answers 401: the fuzzer may revoke
    the very device whose token it holds (DELETE /v1/devices/{id}), and
    the rest of the run must not be left unauthenticated. And every 10 s:
    a user's daily upload quota would otherwise leave POST /v1/media
    answering 429 for most of the run.
    """

    def get(self, case, ctx):
        response = requests.post(
            f"{BASE}/v1/users", json={"display_name": "fuzz"}, timeout=10
        )
        response.raise_for_status()
        return response.json()["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"

