"""Our Klaviyo facts (``klaviyo_consent/klaviyo.py``) agree with Klaviyo's OpenAPI spec.

The spec is not copied into this repository: it is read from ``../shared/klaviyo-openapi``
beside the clone (klaviyo/openapi, ``openapi/stable/apis/<operationId>.json``; CI has it there).
Without it these tests skip, saying where they looked.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from klaviyo_consent import klaviyo
from klaviyo_consent.ratelimit import LIMITS
from klaviyo_consent.testing import fake as fake_package
from klaviyo_consent.testing.fake.routing import _ROUTES

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO.parent / "shared" / "klaviyo-openapi"
#: The per-operation rate-limit extension's key, built here rather than spelt out.
RATE_LIMIT_KEY = "-".join(("x", "klaviyo", "ratelimit"))

pytestmark = pytest.mark.skipif(
    not (SPEC / "apis").is_dir(),
    reason=f"Klaviyo's OpenAPI spec is not at {SPEC} (klaviyo/openapi's openapi/stable goes there)",
)


@cache
def spec(operation_id: str) -> dict[str, Any]:
    """The operation's own spec file; ``stable.json`` (the whole spec) for those without one."""
    path = SPEC / "apis" / f"{operation_id}.json"
    return json.loads((path if path.is_file() else SPEC / "stable.json").read_text())


@cache
def spec_operation_ids() -> frozenset[str]:
    """Every operationId of the whole spec (``stable.json``)."""
    document = json.loads((SPEC / "stable.json").read_text())
    return frozenset(
        found["operationId"]
        for item in document["paths"].values()
        for found in item.values()
        if isinstance(found, dict) and "operationId" in found
    )


def operation(operation_id: str) -> tuple[str, str, dict[str, Any]]:
    """(METHOD, path, operation object) of ``operation_id`` in its spec file."""
    for path, item in spec(operation_id)["paths"].items():
        for method, candidate in item.items():
            if isinstance(candidate, dict) and candidate.get("operationId") == operation_id:
                return method.upper(), path, candidate
    raise AssertionError(f"{operation_id} is not in its own spec file")


def page_size_schema(operation_id: str) -> dict[str, Any]:
    _method, _path, found = operation(operation_id)
    for parameter in found.get("parameters", []):
        if parameter.get("name") == "page[size]":
            return parameter["schema"]
    raise AssertionError(f"{operation_id} takes no page[size]")


def job_size(operation_id: str, phrase: str) -> int:
    match = re.search(re.escape(phrase) + r":\s*(\d+)", operation(operation_id)[2]["description"])
    assert match, f"{operation_id}'s description no longer says {phrase!r}"
    return int(match.group(1))


def test_the_pinned_revision_and_host_are_the_specs():
    document = spec("bulk_subscribe_profiles")
    assert klaviyo.REVISION == document["info"]["version"]
    assert klaviyo.BASE_URL == document["servers"][0]["url"]


@pytest.mark.parametrize("operation_id", sorted(klaviyo.RATE_LIMITS))
def test_each_operations_published_rate_limits_are_ours(operation_id):
    published = operation(operation_id)[2][RATE_LIMIT_KEY]
    limit = klaviyo.RATE_LIMITS[operation_id]
    assert published["burst"] == f"{limit.burst}/s"
    assert published["steady"] == f"{limit.steady}/m"
    assert set(published) == {"burst", "steady"}, "a window we do not enforce (e.g. daily)"


def test_every_operation_the_app_calls_has_published_limits_in_the_facts():
    source = "\n".join(
        path.read_text() for path in (REPO / "klaviyo_consent" / "backends").glob("*.py")
    )
    called = {
        name
        for name in re.findall(r'"([a-z_]+)"', source)
        if (SPEC / "apis" / f"{name}.json").is_file() or name in spec_operation_ids()
    }
    assert {"bulk_subscribe_profiles", "get_profiles"} <= called
    assert called <= set(klaviyo.RATE_LIMITS)
    assert called <= set(LIMITS)
    assert all(LIMITS[name] == klaviyo.RATE_LIMITS[name].windows() for name in called)


def test_the_fake_serves_each_operation_at_the_specs_method_and_path_with_our_limits():
    served = {
        (method, pattern.pattern): name
        for pattern, operations in _ROUTES
        for method, name in operations.items()
    }
    assert set(served.values()) == set(klaviyo.RATE_LIMITS)
    for (method, pattern), name in served.items():
        spec_method, spec_path, _found = operation(name)
        assert method == spec_method, name
        assert re.match(pattern, re.sub(r"\{\w+\}", "some-id", spec_path)), (name, spec_path)
    assert fake_package.RATE_LIMITS is klaviyo.RATE_LIMITS
    assert fake_package.DEFAULT_SMS_COUNTRIES == klaviyo.SMS_COUNTRIES


def test_job_sizes_are_the_specs():
    assert klaviyo.MAX_SUBSCRIBE_PROFILES == job_size(
        "bulk_subscribe_profiles", "Maximum number of profiles can be submitted for subscription"
    )
    assert klaviyo.MAX_UNSUBSCRIBE_PROFILES == job_size(
        "bulk_unsubscribe_profiles", "Maximum number of profiles per call"
    )
    assert klaviyo.MAX_SUPPRESS_PROFILES == job_size(
        "bulk_suppress_profiles", "Email address per request limit"
    )
    assert klaviyo.MAX_UNSUPPRESS_PROFILES == job_size(
        "bulk_unsuppress_profiles", "Email address per request limit"
    )


def test_page_sizes_are_the_specs():
    profiles = page_size_schema("get_profiles")
    assert (klaviyo.MAX_PAGE_SIZE, klaviyo.DEFAULT_PAGE_SIZE) == (
        profiles["maximum"],
        profiles["default"],
    )
    lists = page_size_schema("get_lists")
    assert klaviyo.MAX_LIST_PAGE_SIZE == lists["maximum"] == lists["default"]


def test_suppressions_a_subscribe_lifts_and_those_that_stay_are_the_specs():
    subscribe = operation("bulk_subscribe_profiles")[2]["description"]
    sentence = re.search(r"will remove any ([^.]*) suppressions", subscribe)
    assert sentence, "bulk_subscribe_profiles no longer says which suppressions it removes"
    lifted = set(re.findall(r"`([A-Z_]+)`", sentence.group(1)))
    assert lifted == {"UNSUBSCRIBE", "SPAM_REPORT", "USER_SUPPRESSED"}
    assert lifted <= klaviyo.LIFTED_BY_SUBSCRIBE
    assert not klaviyo.STICKY_SUPPRESSIONS & klaviyo.LIFTED_BY_SUBSCRIBE

    unsuppress = operation("bulk_unsuppress_profiles")[2]["description"]
    stays = re.search(r"reason ([A-Z_]+) or ([A-Z_]+) remain unchanged", unsuppress)
    assert stays, "bulk_unsuppress_profiles no longer says which suppressions remain"
    assert set(stays.groups()) == klaviyo.STICKY_SUPPRESSIONS


def test_suppression_reasons_and_opt_in_processes_are_the_specs_enums():
    schemas = spec("get_profiles")["components"]["schemas"]
    reason = schemas["EmailMarketingSuppression"]["properties"]["reason"]
    assert set(reason["enum"]) == klaviyo.SUPPRESSION_REASONS
    assert klaviyo.STICKY_SUPPRESSIONS <= klaviyo.SUPPRESSION_REASONS

    text = json.dumps(spec("get_lists"))
    described = re.search(r"opt-in process for this list\. Valid values: ([^\"]*)\"", text)
    assert described, "get_lists no longer lists the opt-in processes"
    assert set(re.findall(r"'(\w+)'", described.group(1))) == klaviyo.OPT_IN_PROCESSES


def test_list_membership_and_client_sizes_are_the_specs():
    assert klaviyo.MAX_IMPORT_PROFILES == 10000
    assert (
        "Accepts up to 10,000 profiles per request"
        in operation("bulk_import_profiles")[2]["description"]
    )
    for operation_id in ("add_profiles_to_list", "remove_profiles_from_list"):
        assert (
            f"accepts a maximum of {klaviyo.MAX_LIST_MEMBERS} profiles per call"
            in operation(operation_id)[2]["description"]
        )
    members = page_size_schema("get_profile_ids_for_list")
    assert members["maximum"] == klaviyo.MAX_PAGE_SIZE


def test_the_member_count_rate_limit_is_the_specs():
    description = operation("get_list")[2]["description"]
    limit = klaviyo.ADDITIONAL_FIELD_RATE_LIMITS["get_list+profile_count"]
    tail = description.split("additional-fields[list]=profile_count", 1)[1]
    assert f"Burst: `{limit.burst}/s`" in tail and f"Steady: `{limit.steady}/m`" in tail


def test_the_client_subscription_requires_a_list_and_a_company_id():
    _method, path, found = operation("create_client_subscription")
    assert path == "/client/subscriptions"
    company = [p for p in found["parameters"] if p["name"] == "company_id"]
    assert company and company[0]["required"] and company[0]["in"] == "query"
