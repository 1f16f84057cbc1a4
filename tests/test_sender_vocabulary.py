"""The senders speak the ingest API's vocabulary from dtproto._constants.

tests/test_report.py keeps the report, the server and the CLI free of their
own spellings; this does the same for the sending modules (the sans-IO core,
both transports and the error texts), and checks that what they build from
the constants is what the API expects.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import dtproto
from dtproto import _constants as K
from dtproto import errors
from dtproto.sender import (
    INGEST_PATH,
    ONEAGENT_PATH,
    ONEAGENT_PORT,
    AuthenticationError,
    MissingScopeError,
    Sender,
    ingest_url,
)
from dtproto.server import IngestServer

from test_report import _code_strings  # noqa: E402  (one reader of a module's literals)

SENDER_MODULES = ("_send_core.py", "sender.py", "aio.py", "errors.py")


def test_the_sender_modules_spell_the_ingest_vocabulary_only_through_constants():
    exact = {K.RESPONSE_EMPTY_REQUEST, K.RESPONSE_INVALID_LINES, K.RESPONSE_FIRST_ERRORS,
             K.RESPONSE_FIRST_WARNINGS, K.RESPONSE_WARNINGS_KEY, K.RESPONSE_WARNINGS_KEY_SEEN,
             K.TOKEN_SCHEME, K.TOKEN_SCHEME + " ", K.ENVIRONMENT_PREFIX}
    inside = (K.INGEST_SCOPE, K.INGEST_PATH, K.ONEAGENT_PATH, "/api/v2")
    root = pathlib.Path(dtproto.__file__).resolve().parent
    offenders = []
    for name in SENDER_MODULES:
        path = root / name
        for node in _code_strings(ast.parse(path.read_text(encoding="utf-8"))):
            v = node.value
            if (isinstance(v, str) and (v in exact or any(w in v for w in inside))) or \
                    (type(v) is int and v == K.ONEAGENT_PORT):
                offenders.append("%s:%d: %r" % (name, node.lineno, v))
    assert not offenders, "use the constants of dtproto._constants:\n" + "\n".join(offenders)


def test_the_sender_names_are_the_constants():
    assert (INGEST_PATH, ONEAGENT_PATH, ONEAGENT_PORT) == (
        K.INGEST_PATH, K.ONEAGENT_PATH, K.ONEAGENT_PORT)
    assert Sender.oneagent().url == "http://localhost:%d%s" % (K.ONEAGENT_PORT, K.ONEAGENT_PATH)
    assert Sender.managed("example.com", "abc123", "t").url == \
        "https://example.com" + K.ENVIRONMENT_PREFIX + "abc123" + K.INGEST_PATH
    assert Sender.activegate("ag", "abc123", "t").url == \
        "https://ag:9999" + K.ENVIRONMENT_PREFIX + "abc123" + K.INGEST_PATH


@pytest.mark.parametrize("base, expected", [
    ("https://abc.live.dynatrace.com", "https://abc.live.dynatrace.com/api/v2/metrics/ingest"),
    ("https://abc.live.dynatrace.com/api/v2", "https://abc.live.dynatrace.com/api/v2/metrics/ingest"),
    ("https://abc.live.dynatrace.com/api/v2/", "https://abc.live.dynatrace.com/api/v2/metrics/ingest"),
    ("https://h/e/env", "https://h/e/env/api/v2/metrics/ingest"),
    ("https://h/e/env/api/v2", "https://h/e/env/api/v2/metrics/ingest"),
    ("https://h/e/env/api/v2/metrics/ingest", "https://h/e/env/api/v2/metrics/ingest"),
    ("http://localhost:14499/metrics/ingest", "http://localhost:14499/metrics/ingest"),
])
def test_ingest_url_completes_base_urls(base, expected):
    assert ingest_url(base) == expected


def test_the_empty_request_reason_is_the_api_message():
    assert errors.reason_text(errors.ErrorCode.EMPTY_REQUEST, "", 0).startswith(
        K.RESPONSE_EMPTY_REQUEST)
    assert dtproto.validate(b"").to_response()["error"]["message"] == K.RESPONSE_EMPTY_REQUEST


def test_the_scope_and_the_token_scheme_reach_the_wire_and_the_messages():
    with IngestServer(tokens={"good": [K.INGEST_SCOPE], "readonly": ["metrics.read"]},
                      keep_bodies=True) as srv:
        with Sender(srv.url, "good", concurrency=1) as s:
            assert s.send(b"a.b 1\n").lines_ok == 1
        for token, cls in (("bad", AuthenticationError), ("readonly", MissingScopeError)):
            with Sender(srv.url, token, retries=0) as s:
                with pytest.raises(cls) as ei:
                    s.send(b"a.b 1\n")
            assert "'%s' scope" % K.INGEST_SCOPE in str(ei.value)
            assert token not in str(ei.value)
        # The server accepted "Authorization: Api-Token good" (it checks the scheme).
        assert srv.requests[0].status == 202
