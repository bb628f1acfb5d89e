"""The bearer token, against its contract (README, ``security.py``): with ``--token T`` every ``/v1`` call must send
exactly one ``Authorization: Bearer T`` header; anything else (no token, an empty one, one character short or long,
differing in the last character, another scheme, the token in the query string, two headers) gets 401, and
``/healthz`` shows its details only to the token. No model is loaded: a stand-in engine answers, so each request
costs milliseconds (the whole app with a real model is ``test_serve.py``)."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest

from helpers import require_module

require_module("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from ernievil2torch.apps.serve import check_bind  # noqa: E402
from ernievil2torch.apps.serve.app import ServiceSettings, create_app  # noqa: E402
from ernievil2torch.apps.serve.engine import Answer  # noqa: E402
from ernievil2torch.apps.serve.gallery import Hit  # noqa: E402
from ernievil2torch.apps.serve.security import request_authorized, token_matches  # noqa: E402
from ernievil2torch.errors import InputError  # noqa: E402

TOKEN = "Zq8-tok3n-for-the-auth-tests-9x"


class StandInEngine:
    """Answers every text query with one hit and describes itself; enough for the routes behind the token."""

    def describe(self) -> dict:
        return {"model": "stand-in", "gallery_size": 1}

    def text_batch(self, queries) -> List[Answer]:
        return [Answer(np.ones(2, np.float32) / np.sqrt(2), [Hit(0, "a.png", 1.0)][:q.k]) for q in queries]

    image_batch = text_batch


@pytest.fixture(scope="module")
def client():
    app = create_app(StandInEngine(), ServiceSettings(token=TOKEN, allowed_hosts=None))
    with TestClient(app, base_url="http://photos.lan:8000") as test_client:
        yield test_client


def bearer(value: str) -> dict:
    return {"Authorization": value}


#: (what is sent, why it must be refused). Each differs from ``Bearer TOKEN`` in one way.
REFUSED = [
    ({}, "no Authorization header"),
    (bearer(""), "an empty header"),
    (bearer("Bearer"), "the scheme alone"),
    (bearer("Bearer "), "an empty token"),
    (bearer("Bearer " + TOKEN[:-1]), "one character short"),
    (bearer("Bearer " + TOKEN[:4]), "the first four characters"),
    (bearer("Bearer " + TOKEN + "x"), "one character longer"),
    (bearer("Bearer " + TOKEN[:-1] + ("y" if TOKEN[-1] != "y" else "z")), "differs in the last character"),
    (bearer("Bearer " + "x" + TOKEN[1:]), "differs in the first character"),
    (bearer("Bearer " + TOKEN.upper()), "the token in another case"),
    (bearer("Basic " + TOKEN), "another scheme"),
    (bearer("Token " + TOKEN), "another scheme"),
    (bearer(TOKEN), "no scheme"),
    (bearer("Bearer" + TOKEN), "no space after the scheme"),
    (bearer("Bearer " + TOKEN + " " + TOKEN), "the token twice"),
]


@pytest.mark.parametrize("headers,why", REFUSED, ids=[why + f" #{i}" for i, (_, why) in enumerate(REFUSED)])
def test_a_wrong_authorization_is_refused(client, headers, why):
    response = client.get("/v1/search", params={"q": "猫", "k": 1}, headers=headers)
    assert response.status_code == 401, why
    assert response.headers["www-authenticate"] == "Bearer" and "bearer token" in response.json()["error"]
    assert not token_matches(headers.get("Authorization"), TOKEN), why


@pytest.mark.parametrize("value", ["Bearer " + TOKEN, "bearer " + TOKEN, "BEARER " + TOKEN,
                                   "Bearer " + TOKEN + " ", "Bearer  " + TOKEN])
def test_the_token_is_accepted_with_any_case_of_scheme_and_surrounding_spaces(client, value):
    response = client.get("/v1/search", params={"q": "猫", "k": 1}, headers=bearer(value))
    assert response.status_code == 200, (value, response.text)
    assert [hit["id"] for hit in response.json()["results"]] == ["a.png"]


@pytest.mark.parametrize("name", ["access_token", "token", "Authorization", "bearer"])
def test_a_token_in_the_query_string_does_not_count(client, name):
    response = client.get("/v1/search", params={"q": "猫", "k": 1, name: TOKEN})
    assert response.status_code == 401, name
    response = client.get("/v1/search", params={"q": "猫", "k": 1, name: "Bearer " + TOKEN})
    assert response.status_code == 401, name


@pytest.mark.parametrize("values", [["Bearer " + TOKEN, "Bearer " + TOKEN], ["Bearer " + TOKEN, "Bearer wrong"],
                                    ["Bearer wrong", "Bearer " + TOKEN], ["Bearer " + TOKEN, ""]])
def test_repeated_authorization_headers_are_refused(client, values):
    """Two Authorization headers are ambiguous (a proxy may act on the other one): refused, whatever their order."""
    headers = [("Authorization", v) for v in values]
    assert client.get("/v1/search", params={"q": "猫", "k": 1}, headers=headers).status_code == 401
    assert not request_authorized(values, TOKEN)
    health = client.get("/healthz", headers=headers).json()
    assert health == {"status": "ok", "auth_required": True}


def test_every_api_route_needs_the_token_and_the_page_does_not(client):
    for method, url in (("GET", "/v1/search?q=x"), ("POST", "/v1/embed/text"), ("POST", "/v1/search/image"),
                        ("POST", "/v1/embed/image"), ("GET", "/v1/images/0"), ("GET", "/v1/nothing-here")):
        assert client.request(method, url, headers=bearer("Bearer " + TOKEN[:-1])).status_code == 401, url
    for public in ("/", "/assets/page.css", "/assets/page.js"):
        assert client.get(public).status_code == 200, public
    assert client.get("/healthz").json() == {"status": "ok", "auth_required": True}
    details = client.get("/healthz", headers=bearer("Bearer " + TOKEN)).json()
    assert details["gallery_size"] == 1 and details["auth_required"] is True
    for headers, _ in REFUSED:
        assert client.get("/healthz", headers=headers).json() == {"status": "ok", "auth_required": True}


def test_request_authorized_needs_exactly_one_matching_header():
    assert request_authorized(["Bearer " + TOKEN], TOKEN)
    assert not request_authorized([], TOKEN)
    assert not request_authorized(["Bearer " + TOKEN] * 2, TOKEN)
    assert not request_authorized(["Bearer " + TOKEN[:-1]], TOKEN)
    assert not token_matches(None, TOKEN) and not token_matches("Bearer " + TOKEN, TOKEN + "!")


@pytest.mark.parametrize("token", ["é" * 16, "sixteen chars and spaces", "tab\tseparated-token-1", "ｔｏｋｅｎ" * 4])
def test_a_token_a_client_cannot_send_in_a_header_is_refused_at_startup(token):
    with pytest.raises(InputError, match="visible ASCII"):
        check_bind("0.0.0.0", token)
    check_bind("0.0.0.0", TOKEN)
    check_bind("0.0.0.0", "!" * 16)  # the edges of the visible range
    check_bind("127.0.0.1", "~" * 16)


def test_host_header_names_are_read_with_and_without_a_port():
    """``Host`` is ``name[:port]``; an IPv6 literal keeps its brackets (``[::1]:8000`` names ``[::1]``; a bare ``::1`` is no valid Host)."""
    from ernievil2torch.apps.serve.security import LOOPBACK_HOST_NAMES, host_allowed

    for header in ("localhost", "LOCALHOST:8000", "127.0.0.1:1", "[::1]", "[::1]:8000", " [::1]:65535 "):
        assert host_allowed(header, LOOPBACK_HOST_NAMES), header
    for header in ("evil.example", "evil.example:8000", "[::2]:8000", "[::1", "::1", "localhost.evil.example:80",
                   "127.0.0.2:8000", ""):
        assert not host_allowed(header, LOOPBACK_HOST_NAMES), header
    assert host_allowed("anything:1", None)
