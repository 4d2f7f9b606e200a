"""Reads: profiles (with their ``subscriptions``) and lists, filtered, sorted and paginated."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from klaviyo_consent.klaviyo import DEFAULT_PAGE_SIZE, MAX_LIST_PAGE_SIZE, MAX_PAGE_SIZE
from klaviyo_consent.testing.fake.errors import _problem
from klaviyo_consent.testing.fake.filters import (
    _LIST_FILTERS,
    _PROFILE_FILTERS,
    _compile_filter,
    _field_of,
    _matches,
    _paginate,
    _sort,
)
from klaviyo_consent.testing.fake.records import (
    FakeResponse,
    _Call,
    _iso,
    _List,
    _phone_info,
    _Profile,
)
from klaviyo_consent.testing.fake.state import AccountState


class Reads(AccountState):
    """``GET /api/profiles``, ``/api/profiles/{id}``, ``/api/lists``, ``/api/lists/{id}``."""

    # --- profiles and lists ----------------------------------------------------------------

    def _additional_fields(self, call: _Call) -> bool:
        raw = call.params.get("additional-fields[profile]", "")
        requested = {item.strip() for item in raw.split(",") if item.strip()}
        unknown = requested - {"subscriptions", "predictive_analytics"}
        if unknown:
            raise _problem(
                400,
                f"Invalid additional-fields[profile] value(s): {', '.join(sorted(unknown))}.",
                parameter="additional-fields[profile]",
            )
        return "subscriptions" in requested

    def _normalise_profile_value(self, field_name: str, value: str) -> str:
        if field_name == "email":
            return value.lower()
        if field_name == "phone_number":
            if value.startswith(" ") and value.strip().isdigit():
                value = "+" + value.strip()
            return _phone_info(value)[0] or value
        return value

    def _op_get_profiles(self, call: _Call) -> FakeResponse:
        with_subscriptions = self._additional_fields(call)
        conditions = _compile_filter(
            call.params.get("filter"), _PROFILE_FILTERS, self._normalise_profile_value
        )
        pool: Iterable[_Profile] = self._profiles.values()
        for operator, field_name, operand in conditions:
            if operator in ("equals", "any") and field_name in ("id", "email", "phone_number"):
                wanted = [operand] if operator == "equals" else operand
                index = {
                    "id": self._profiles,
                    "email": self._by_email,
                    "phone_number": self._by_phone,
                }[field_name]
                pool = sorted(
                    {index[value].id: index[value] for value in wanted if value in index}.values(),
                    key=lambda p: p.seq,
                )
                break
        if conditions:
            selected = [p for p in pool if _matches(conditions, functools.partial(_field_of, p))]
        else:
            selected = list(pool)
        selected = _sort(selected, call.params.get("sort"), {"created", "updated", "id", "email"})
        page, links = _paginate(
            call, selected, default_size=DEFAULT_PAGE_SIZE, max_size=MAX_PAGE_SIZE
        )
        data = [
            self._profile_resource(p, call.base, with_subscriptions=with_subscriptions)
            for p in page
        ]
        return self._json_response(
            200, {"data": data, "links": links}, "GetProfileResponseCollection"
        )

    def _op_get_profile(self, call: _Call) -> FakeResponse:
        with_subscriptions = self._additional_fields(call)
        profile = self._profiles.get(call.args["id"])
        if profile is None:
            raise _problem(404, f"A profile with id {call.args['id']} does not exist.")
        document = {
            "data": self._profile_resource(
                profile, call.base, with_subscriptions=with_subscriptions
            ),
            "links": {"self": call.url},
        }
        return self._json_response(200, document, "GetProfileResponse")

    def _list_resource(
        self, item: _List, base: str, *, profile_count: bool = False
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "name": item.name,
            "created": _iso(item.created),
            "updated": _iso(item.updated),
            "opt_in_process": item.opt_in_process,
        }
        if profile_count:
            attributes["profile_count"] = len(item.members)
        return {
            "type": "list",
            "id": item.id,
            "attributes": attributes,
            "links": {"self": f"{base}/api/lists/{item.id}/"},
        }

    def _op_get_lists(self, call: _Call) -> FakeResponse:
        conditions = _compile_filter(
            call.params.get("filter"), _LIST_FILTERS, lambda _field, value: value
        )
        selected = [
            item
            for item in self._lists.values()
            if _matches(conditions, lambda name, item=item: getattr(item, name))
        ]
        selected = _sort(selected, call.params.get("sort"), {"created", "updated", "id", "name"})
        page, links = _paginate(
            call, selected, default_size=MAX_LIST_PAGE_SIZE, max_size=MAX_LIST_PAGE_SIZE
        )
        data = [self._list_resource(item, call.base) for item in page]
        return self._json_response(200, {"data": data, "links": links}, "GetListResponseCollection")

    def _op_get_list(self, call: _Call) -> FakeResponse:
        item = self._lists.get(call.args["id"])
        if item is None:
            raise _problem(404, f"A list with id {call.args['id']} does not exist.")
        raw = call.params.get("additional-fields[list]", "")
        requested = {part.strip() for part in raw.split(",") if part.strip()}
        if requested - {"profile_count"}:
            raise _problem(
                400,
                f"Invalid additional-fields[list] value(s): {', '.join(sorted(requested))}.",
                parameter="additional-fields[list]",
            )
        resource = self._list_resource(item, call.base, profile_count="profile_count" in requested)
        document = {"data": resource, "links": {"self": call.url}}
        return self._json_response(200, document, "GetListRetrieveResponseCompoundDocument")
