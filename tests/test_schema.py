"""The API's OpenAPI schema, its docs page, the API root and the browsable API's example bodies.

The schema's agreement with the running server is schemathesis's job (``make test-schema``);
these pin what the schema promises and that every example in it is true.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver

from klaviyo_consent.api import examples

pytestmark = pytest.mark.django_db

SCHEMA = "/api/consent/schema/"


@pytest.fixture
def schema(client: Any) -> dict[str, Any]:
    response = client.get(SCHEMA, {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def _app_routes() -> list[str]:
    """Every route the app mounts under api/consent/, as OpenAPI paths (``{id}`` for ``<pk>``)."""
    (consent,) = [
        p for p in get_resolver().url_patterns if isinstance(p, URLResolver)
        and p.namespace == "klaviyo_consent"
    ]
    routes = []
    for pattern in consent.url_patterns:
        assert isinstance(pattern, URLPattern)
        if pattern.name in ("schema", "docs"):
            continue
        route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern)).replace("{pk}", "{id}")
        routes.append(f"/api/consent/{route}")
    return routes


def test_the_schema_command_validates_with_no_warning(tmp_path: Path) -> None:
    out = tmp_path / "schema.yaml"
    # --fail-on-warn: a warning (an unresolvable enum name, an untyped field) is a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/consent/subscribe/" in out.read_text()


def test_the_schema_is_openapi_3_and_names_every_app_route(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "django-klaviyo-consent API"
    assert sorted(schema["paths"]) == sorted(_app_routes())


def test_every_operation_has_a_summary_a_success_example_and_its_error_shapes(
    schema: dict[str, Any],
) -> None:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), where
            responses = operation["responses"]
            success = next(code for code in responses if code.startswith("2"))
            content = responses[success].get("content", {})
            assert any(c.get("examples") for c in content.values()), (
                f"{where}: no example of its {success}"
            )
            if method == "post" and path != "/api/consent/webhooks/klaviyo/":
                assert {"400", "403", "415"} <= set(responses), where
                if "erase" not in path:  # the throttled writes (erasure has no rate limit)
                    assert "429" in responses, where
                assert operation["requestBody"]["content"]["application/json"]["examples"], where
            if "{id}" in path:
                assert "404" in responses, where
            for code, response in responses.items():
                if code != success and code != "500":
                    assert response.get("content"), f"{where} {code} has no shape"


def test_a_conflict_is_documented_with_the_identity_conflict_shape(schema: dict[str, Any]) -> None:
    conflict = schema["paths"]["/api/consent/subscribe/"]["post"]["responses"]["409"]
    ref = conflict["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    shape = schema["components"]["schemas"][ref]
    assert set(shape["required"]) == {"code", "fields", "detail"}
    code = shape["properties"]["code"]
    if "$ref" in code:
        code = schema["components"]["schemas"][code["$ref"].rsplit("/", 1)[-1]]
    assert code["enum"] == ["identity_conflict"]


def test_a_write_answer_is_documented_as_either_shape_a_caller_may_get(
    schema: dict[str, Any],
) -> None:
    created = schema["paths"]["/api/consent/subscribe/"]["post"]["responses"]["201"]
    ref = created["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    # anyOf, not oneOf: the full answer also satisfies the summary's shape.
    assert len(schema["components"]["schemas"][ref]["anyOf"]) == 2
    assert "oneOf" not in schema["components"]["schemas"][ref]


def test_a_field_that_may_be_blank_allows_blank_beside_its_format(schema: dict[str, Any]) -> None:
    # An event recorded by phone number alone has "email": "" (found by schemathesis).
    # (Since erasure keeps the event's identifiers apart, its email is no model field and
    # carries no format; the profile's still is one.)
    components = schema["components"]["schemas"]
    for component in ("ConsentEvent", "Profile"):
        email = components[component]["properties"]["email"]
        if "format" in str(email):
            assert {"type": "string", "maxLength": 0} in email["anyOf"], component
            assert {"type": "string", "format": "email"} in email["anyOf"], component
    assert "anyOf" in components["Profile"]["properties"]["email"]


@pytest.mark.parametrize(
    "path,example",
    [
        ("/api/consent/subscribe/", examples.SUBSCRIBE),
        ("/api/consent/unsubscribe/", examples.UNSUBSCRIBE),
        ("/api/consent/suppress/", examples.SUPPRESS),
        ("/api/consent/check/", examples.CHECK),
    ],
)
def test_each_request_example_is_accepted(api: Any, fake: Any, path: str, example: dict) -> None:
    api.post("/api/consent/subscribe/", examples.SUBSCRIBE, format="json")
    response = api.post(path, example, format="json")
    assert response.status_code in (200, 201), response.content


def test_the_documented_request_example_is_the_one_in_examples(schema: dict[str, Any]) -> None:
    body = schema["paths"]["/api/consent/subscribe/"]["post"]["requestBody"]
    assert body["content"]["application/json"]["examples"]["Request"]["value"] == (
        examples.SUBSCRIBE
    )


def test_the_docs_page_loads_swagger_ui_from_the_sites_static_files(client: Any) -> None:
    page = client.get("/api/consent/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower() and "https://" not in page
    assert SCHEMA in page


def test_the_api_root_links_every_endpoint_without_a_path_parameter(client: Any) -> None:
    links = client.get("/api/consent/", HTTP_ACCEPT="application/json").json()
    expected = {route for route in _app_routes() if "{" not in route} - {"/api/consent/"}
    expected |= {"/api/consent/schema/", "/api/consent/docs/"}
    assert {link.removeprefix("http://testserver") for link in links.values()} == expected


@pytest.mark.parametrize(
    "path,example",
    [
        ("/api/consent/subscribe/", examples.SUBSCRIBE),
        ("/api/consent/suppress/", examples.SUPPRESS),
        ("/api/consent/check/", examples.CHECK),
    ],
)
def test_the_browsable_apis_post_form_starts_with_the_example_body(
    api: Any, path: str, example: dict
) -> None:
    page = api.get(path, HTTP_ACCEPT="text/html").content.decode()
    start = page.index('name="_content"')
    content = html.unescape(page[page.index(">", start) + 1 : page.index("</textarea>", start)])
    assert json.loads(content) == example


def test_a_mounted_api_without_the_docs_apps_is_a_warning_naming_them(settings) -> None:
    from django.core import checks

    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "drf_spectacular_sidecar"]
    [warning] = [m for m in checks.run_checks(tags=["klaviyo_consent"]) if m.id.endswith("W040")]
    assert "drf_spectacular_sidecar" in warning.msg
    assert "drf_spectacular," not in warning.msg  # only what is missing


def test_the_docs_apps_installed_is_no_warning() -> None:
    from django.core import checks

    assert not [m for m in checks.run_checks(tags=["klaviyo_consent"]) if m.id.endswith("W040")]


def test_a_merged_away_profile_reads_with_its_own_ledger_not_a_500(api: Any, fake: Any) -> None:
    # Found by schemathesis's stateful phase: GET profiles/{id}/ of a merged profile raised
    # KeyError in latest_events (its events were keyed by the survivor, not asked for).
    kept = api.post(
        "/api/consent/subscribe/",
        {
            "profile": {"email": "grace@example.com"},
            "subscriptions": {"email": {"marketing": True}},
        },
        format="json",
    ).data["profile"]["id"]
    merged = api.post(
        "/api/consent/subscribe/",
        {
            "profile": {"phone_number": "+447400123456"},
            "subscriptions": {"sms": {"marketing": True}},
        },
        format="json",
    ).data["profile"]["id"]
    answer = api.post(f"/api/consent/profiles/{kept}/merge/", {"other": merged}, format="json")
    assert answer.status_code == 200
    # The merge answers with no delivery for its identity event: the schema allows null.
    assert answer.data["identity_event"]["delivery"] is None
    response = api.get(f"/api/consent/profiles/{merged}/")
    assert response.status_code == 200
    assert response.data["merged_into"] == kept
    assert response.data["ledger"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    survivor = api.get(f"/api/consent/profiles/{kept}/").data["ledger"]
    assert survivor["sms"]["marketing"]["consent"] == "SUBSCRIBED"  # the person's ledger


def test_a_nullable_nested_answer_is_documented_nullable(schema: dict[str, Any]) -> None:
    delivery = schema["components"]["schemas"]["IdentityEvent"]["properties"]["delivery"]
    assert delivery.get("nullable") is True


def test_a_component_is_not_described_by_a_mixins_docstring(schema: dict[str, Any]) -> None:
    for name, component in schema["components"]["schemas"].items():
        assert "once per class" not in component.get("description", ""), name
