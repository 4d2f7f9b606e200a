"""No input reaches a 5xx, proven by generation: Hypothesis writes hostile bodies and query
strings for every endpoint and each answer must be below 500.

Derandomized (the same examples every run, so CI is deterministic) and bounded (a few dozen
examples per endpoint, no shrinking deadline), on whichever database the suite runs: SQLite
by default, PostgreSQL with DATABASE_URL.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from klaviyo_consent.models import Profile
from klaviyo_consent.services.webhooks import sign

pytestmark = pytest.mark.django_db

EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SECRET = "fuzz-secret"
_NONCES = itertools.count()

#: Text a careless client or an attacker sends: control characters, NUL, lone surrogates,
#: non-ASCII digits, full-width forms, path and query syntax, very long strings.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\ud800",
            "²",
            "٣",
            "１２３",
            "../..",
            "a/b?c=d#e",
            "%00",
            "ada@localhost",
            "ada@[127.0.0.1]",
            "ａｄａ@ｅｘａｍｐｌｅ.com",
            "tel:+447400123456;ext=1",
            "+447400123456 ext. 12",
            "+44 7400 123456",
            '=HYPERLINK("x")',
            "9" * 30,
            "x" * 5000,
            "0001-01-01T00:00:00",
            "9999-12-31T23:59:59-12:00",
            "NaN",
            "true",
        ]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(nasty_text, children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside ``value`` (dict keys and list indexes), the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in items:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


@st.composite
def one_hostile_leaf(draw: Any, valid: dict[str, Any]) -> Any:
    """``valid`` with one value replaced by hostile JSON, or one key dropped: the body gets
    past the outer checks, so the rules deep inside are what the example tests."""
    body = json.loads(json.dumps(valid))
    path = draw(st.sampled_from(_paths(body)))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return body


VALID_CONSENT = {
    "profile": {
        "email": "ada@example.com",
        "phone_number": "+447400123456",
        "country": "GB",
        "external_id": "cust-1",
    },
    "subscriptions": {
        "email": {"marketing": True},
        "sms": {"marketing": True, "transactional": False},
    },
    "list_id": "Single",
    "method": "form",
    "method_detail": "footer",
    "custom_source": "Footer",
    "consent_text": "Yes",
}
VALID_HISTORICAL = {
    **VALID_CONSENT,
    "historical_import": True,
    "consented_at": "2020-01-01T00:00:00Z",
}
VALID_WEBHOOK = {
    "data": [
        {
            "topic": "event:klaviyo.unsubscribed_from_sms_marketing",
            "external_id": "x",
            "payload": {
                "data": {
                    "type": "event",
                    "id": "ev1",
                    "attributes": {
                        "datetime": "2026-01-01T00:00:00+00:00",
                        "profile": {
                            "data": {
                                "type": "profile",
                                "id": "01GSQPBF74KQ5YTDEPP41T1BZH",
                                "attributes": {
                                    "email": "ada@example.com",
                                    "phone_number": "+447400123456",
                                },
                            }
                        },
                    },
                }
            },
        }
    ],
    "meta": {
        "klaviyo_account_id": "FakeAcct",
        "klaviyo_webhook_id": "wh_fuzz",
        "timestamp": "2026-01-01T00:00:00+00:00",
    },
}


def _field(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: usually the given kind, sometimes any JSON at all."""
    return st.one_of(value, json_values)


email = _field(st.one_of(st.emails(), nasty_text))
phone = _field(st.one_of(st.from_regex(r"\+?[0-9 ()\-.]{0,20}", fullmatch=True), nasty_text))
flag = _field(st.booleans())
profile = _field(
    st.fixed_dictionaries(
        {},
        optional={
            "email": email,
            "phone_number": phone,
            "external_id": _field(nasty_text),
            "country": _field(st.sampled_from(["GB", "US", "gb", "XX", "", None])),
        },
    )
)
purposes = st.fixed_dictionaries({}, optional={"marketing": flag, "transactional": flag})
consent_body = st.fixed_dictionaries(
    {},
    optional={
        "profile": profile,
        "subscriptions": _field(
            st.fixed_dictionaries({}, optional={"email": _field(purposes), "sms": _field(purposes)})
        ),
        "list_id": _field(nasty_text),
        "method": _field(st.sampled_from(["form", "api", "import", "admin", "klaviyo", "x"])),
        "method_detail": _field(nasty_text),
        "custom_source": _field(nasty_text),
        "consent_text": _field(nasty_text),
        "consented_at": _field(nasty_text),
        "historical_import": flag,
    },
)
any_body = st.one_of(
    json_values,
    consent_body,
    one_hostile_leaf(VALID_CONSENT),
    one_hostile_leaf(VALID_HISTORICAL),
)
check_body = st.fixed_dictionaries(
    {},
    optional={
        "emails": _field(st.lists(_field(email), max_size=5)),
        "phone_numbers": _field(st.lists(_field(phone), max_size=5)),
        "country": _field(nasty_text),
    },
)
suppress_body = st.fixed_dictionaries(
    {},
    optional={
        "emails": _field(st.lists(_field(email), max_size=5)),
        "method_detail": _field(nasty_text),
    },
)
phone_body = st.fixed_dictionaries(
    {}, optional={"phone_number": phone, "country": _field(nasty_text)}
)
merge_body = st.fixed_dictionaries({}, optional={"other": _field(st.integers())})
webhook_body = st.fixed_dictionaries(
    {},
    optional={
        "data": _field(
            st.lists(
                _field(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "topic": _field(
                                st.sampled_from(
                                    [
                                        "event:klaviyo.subscribed_to_email_marketing",
                                        "event:klaviyo.unsubscribed_from_sms_marketing",
                                        "x",
                                    ]
                                )
                            ),
                            "external_id": _field(nasty_text),
                            "payload": _field(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "data": json_values,
                                        "email": email,
                                        "phone_number": phone,
                                        "profile_id": _field(nasty_text),
                                    },
                                )
                            ),
                        },
                    )
                ),
                max_size=3,
            )
        ),
        "meta": _field(
            st.fixed_dictionaries(
                {},
                optional={
                    "klaviyo_webhook_id": _field(st.just("wh_fuzz")),
                    "klaviyo_account_id": _field(nasty_text),
                    "timestamp": _field(nasty_text),
                },
            )
        ),
    },
)


def _raw(value: Any) -> bytes:
    """JSON text as a client would send it (``NaN``, ``Infinity`` and lone surrogates too)."""
    return json.dumps(value, allow_nan=True).encode()


@pytest.fixture
def client(staff: Any, fake: Any, settings: Any) -> APIClient:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "klaviyo_consent_write": None,
            "klaviyo_consent_check": None,
            "klaviyo_consent_webhook": None,
            "klaviyo_consent_public": None,
        },
    }
    settings.KLAVIYO_CONSENT = {
        **settings.KLAVIYO_CONSENT,
        "WEBHOOK_SECRET": SECRET,
        "PUSH_ON_COMMIT": False,
    }
    api = APIClient()
    api.force_authenticate(staff)
    return api


def _ok(response: Any, sent: Any) -> None:
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics shows the spread
    assert response.status_code < 500, (sent, response.content[:500])


@pytest.mark.parametrize("path", ["subscribe/", "unsubscribe/"])
@FUZZ
@given(data=any_body)
def test_no_consent_body_reaches_a_5xx(client, path, data):
    _ok(client.post(f"/api/consent/{path}", _raw(data), content_type="application/json"), data)


@FUZZ
@given(
    data=st.one_of(
        check_body,
        json_values,
        one_hostile_leaf(
            {
                "emails": ["ada@example.com", "x@y.com"],
                "phone_numbers": ["07400 123456"],
                "country": "GB",
            }
        ),
    )
)
def test_no_check_body_reaches_a_5xx(client, data):
    _ok(client.post("/api/consent/check/", _raw(data), content_type="application/json"), data)


PUBLIC_SIGNUP = {
    "profile": {"email": "ada@example.com", "phone_number": "07400 123457", "country": "GB"},
    "subscriptions": {"email": {"marketing": True}, "sms": {"marketing": True}},
    "consent_text_ids": {"email": 1, "sms": 2},
}


@FUZZ
@given(data=st.one_of(json_values, one_hostile_leaf(PUBLIC_SIGNUP)))
def test_no_public_signup_body_reaches_a_5xx(client, data):
    _ok(
        client.post("/api/consent/public/subscribe/", _raw(data), content_type="application/json"),
        data,
    )


FORM_FIELDS = [
    "email",
    "email_marketing",
    "country",
    "phone_number",
    "sms_marketing",
    "email_text",
    "sms_text",
    "website",
    "next",
]


@FUZZ
@given(data=st.dictionaries(st.sampled_from(FORM_FIELDS), nasty_text))
def test_no_drop_in_form_post_reaches_a_5xx(client, data):
    from urllib.parse import urlencode

    from django.test import Client

    # As bytes on the wire, lone surrogates too (a browser sends whatever a page's script puts).
    body = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in data.items()})
    browser = Client()
    response = browser.post(
        "/consent/signup/", body, content_type="application/x-www-form-urlencoded"
    )
    _ok(response, data)
    # ... and the page it goes back to shows the form again (or the thanks) as text.
    from django.template import RequestContext, Template
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.session = browser.session
    page = Template("{% load klaviyo_consent %}{% consent_form %}").render(RequestContext(request))
    page.encode("utf-8")


@pytest.mark.parametrize("path", ["suppress/", "unsuppress/"])
@FUZZ
@given(
    data=st.one_of(
        suppress_body,
        json_values,
        one_hostile_leaf({"emails": ["ada@example.com", "b@example.com"], "method_detail": "x"}),
    )
)
def test_no_suppression_body_reaches_a_5xx(client, path, data):
    _ok(client.post(f"/api/consent/{path}", _raw(data), content_type="application/json"), data)


@pytest.fixture
def two_profiles(client: APIClient) -> tuple[int, int]:
    first = Profile.objects.create(email="first@example.com")
    second = Profile.objects.create(phone_number="+447400123456")
    return first.pk, second.pk


@FUZZ
@given(
    data=st.one_of(
        phone_body,
        json_values,
        one_hostile_leaf({"phone_number": "07400 123457", "country": "GB"}),
    )
)
def test_no_phone_number_body_reaches_a_5xx(client, two_profiles, data):
    path = f"/api/consent/profiles/{two_profiles[0]}/phone-number/"
    _ok(client.post(path, _raw(data), content_type="application/json"), data)


@FUZZ
@given(data=st.one_of(merge_body, json_values), ids=st.just(None))
def test_no_merge_body_reaches_a_5xx(client, two_profiles, data, ids):
    if isinstance(data, dict) and data.get("other") == "second":
        data["other"] = two_profiles[1]
    path = f"/api/consent/profiles/{two_profiles[0]}/merge/"
    _ok(client.post(path, _raw(data), content_type="application/json"), data)


@FUZZ
@given(data=st.one_of(webhook_body, json_values, one_hostile_leaf(VALID_WEBHOOK)))
def test_no_correctly_signed_webhook_body_reaches_a_5xx(client, data):
    if isinstance(data, dict):  # a fresh signature each example: never refused as a replay
        data = {**data, "meta": data.get("meta"), "data": data.get("data")}
        data["nonce"] = next(_NONCES)
    raw = _raw(data)
    stamp = str(int(time.time()))
    headers = {
        "Klaviyo-Webhook-Id": "wh_fuzz",
        "Klaviyo-Timestamp": stamp,
        "Klaviyo-Signature": sign(raw, stamp, SECRET),
    }
    response = APIClient().post(
        "/api/consent/webhooks/klaviyo/", raw, content_type="application/json", headers=headers
    )
    _ok(response, data)


query = st.dictionaries(
    st.sampled_from(
        [
            "email",
            "phone_number",
            "external_id",
            "country",
            "profile",
            "channel",
            "page",
            "page_size",
            "ordering",
            "x",
        ]
    ),
    nasty_text.filter(lambda text: "\ud800" not in text),
    max_size=4,
)


@pytest.mark.parametrize("path", ["profiles/", "events/"])
@FUZZ
@given(params=query)
def test_no_query_string_reaches_a_5xx(client, path, params):
    _ok(client.get(f"/api/consent/{path}", params), params)
