"""List membership: bulk profile import jobs, the list's profile relationships, member reads.

Spec revision 2026-07-15: ``bulk_import_profiles`` (≤ 10,000 profiles, 202 with the job),
``get_bulk_import_profiles_job``, ``add_profiles_to_list`` / ``remove_profiles_from_list``
(≤ 1000 profile ids, 204) and ``get_profile_ids_for_list`` (``filter`` on email / phone_number).
Bodies are validated with the SDK's ``ProfileImportJobCreateQuery``, ``ListMembersAddQuery`` and
``ListMembersDeleteQuery``. Membership never changes consent: an import sets identifiers only
(its schema has no ``subscriptions``; a stray one is ignored, as the SDK drops unknown keys),
and removing someone from a list "will not impact the profile's consent" (spec). A profile id
the account does not have is a 404 pointing at ``/data/<i>/id`` (unconfirmed: the spec documents
only "4XX" for these calls).
"""

from __future__ import annotations

from typing import Any

from openapi_client.models.list_members_add_query import ListMembersAddQuery
from openapi_client.models.list_members_delete_query import ListMembersDeleteQuery
from openapi_client.models.profile_import_job_create_query import ProfileImportJobCreateQuery
from openapi_client.models.profile_upsert_query_resource_object import (
    ProfileUpsertQueryResourceObject,
)

from klaviyo_consent.klaviyo import MAX_IMPORT_PROFILES, MAX_LIST_MEMBERS, MAX_PAGE_SIZE
from klaviyo_consent.testing.fake.errors import _Problem, _problem, error_object
from klaviyo_consent.testing.fake.filters import _compile_filter, _paginate
from klaviyo_consent.testing.fake.records import (
    _EMAIL_RE,
    INVALID_EMAIL_DETAIL,
    INVALID_PHONE_DETAIL,
    FakeResponse,
    _Call,
    _iso,
    _List,
    _phone_info,
)
from klaviyo_consent.testing.fake.state import AccountState

IMPORT_JOB = "profile-bulk-import-job"
_LIST_MEMBER_FILTERS = {"email": {"equals", "any"}, "phone_number": {"equals", "any"}}


class ListMemberships(AccountState):
    """Adds, removes and reads list members; imports profiles into lists."""

    # --- helpers for tests -----------------------------------------------------------------

    def is_member(
        self, list_id: str, *, email: str | None = None, phone_number: str | None = None
    ) -> bool:
        """Whether the profile with this email / phone number is on the list."""
        with self._lock:
            profile = self._lookup(email, phone_number)
            return profile is not None and profile.id in self._lists[list_id].members

    def unsubscribe_from_list(self, email: str, list_id: str) -> None:
        """The person leaves one list (its unsubscribe link): off the list, with a
        ``list_suppressions`` entry for it; global consent is left as it was."""
        with self._lock:
            profile = self._require(email, None)
            moment = self.now()
            self._lists[list_id].members.pop(profile.id, None)
            profile.email_marketing["list_suppressions"].append(
                {"list_id": list_id, "reason": "UNSUBSCRIBE", "timestamp": _iso(moment)}
            )
            profile.updated = moment

    @property
    def import_jobs(self) -> dict[str, dict[str, Any]]:
        """Bulk import jobs by id (the resources ``get_bulk_import_profiles_job`` answers)."""
        with self._lock:
            return dict(self._import_jobs)

    # --- bulk import ------------------------------------------------------------------------

    def _existing_list(self, list_id: str, pointer: str | None = None) -> _List:
        found = self._lists.get(list_id)
        if found is None:
            if pointer is None:
                raise _problem(404, f"A list with id {list_id} does not exist.")
            raise _problem(404, f"A list with id {list_id} does not exist.", pointer=pointer)
        return found

    def _op_bulk_import_profiles(self, call: _Call) -> FakeResponse:
        document = self._read_body(call)
        query = self._sdk_validate(
            ProfileImportJobCreateQuery, ProfileUpsertQueryResourceObject, document
        )
        entries = query.data.attributes.profiles.data
        if not entries or len(entries) > MAX_IMPORT_PROFILES:
            raise _problem(
                400,
                f"A job takes 1 to {MAX_IMPORT_PROFILES} profiles; got {len(entries)}.",
                pointer="/data/attributes/profiles/data",
            )
        relationships = query.data.relationships
        wanted = relationships.lists.data if relationships and relationships.lists else []
        targets = [
            self._existing_list(item.id, f"/data/relationships/lists/data/{index}/id")
            for index, item in enumerate(wanted or [])
        ]
        moment = self.now()
        job_id = self._new_profile_id(moment)
        import_errors: list[dict[str, Any]] = []
        imported: list[str] = []
        for index, entry in enumerate(entries):
            attributes = entry.attributes
            email = attributes.email or None
            phone = attributes.phone_number or None
            pointer = f"/data/attributes/profiles/data/{index}/attributes"
            if email and not _EMAIL_RE.match(email):
                import_errors.append(
                    error_object(400, INVALID_EMAIL_DETAIL, pointer=f"{pointer}/email")
                )
                continue
            if phone and _phone_info(phone)[0] is None:
                import_errors.append(
                    error_object(400, INVALID_PHONE_DETAIL, pointer=f"{pointer}/phone_number")
                )
                continue
            profile = self._find(entry.id, email, phone)
            if profile is None and attributes.external_id:
                profile = next(
                    (p for p in self._profiles.values() if p.external_id == attributes.external_id),
                    None,
                )
            if profile is None:
                if not (email or phone):
                    import_errors.append(
                        error_object(
                            400, "Either an email or a phone_number is required.", pointer=pointer
                        )
                    )
                    continue
                profile = self._create_profile(email, phone, moment)
            else:
                self._fill_identifiers(profile, email, phone)
            if attributes.external_id and profile.external_id is None:
                profile.external_id = attributes.external_id
            profile.updated = moment
            # Identifiers only: consent (subscriptions) is never touched by an import.
            for target in targets:
                target.members[profile.id] = None
            imported.append(profile.id)
        stamp = _iso(moment)
        job = {
            "type": IMPORT_JOB,
            "id": job_id,
            "attributes": {
                "status": "complete",
                "created_at": stamp,
                "total_count": len(entries),
                "completed_count": len(imported),
                "failed_count": len(import_errors),
                "completed_at": stamp,
                "expires_at": None,
                "started_at": stamp,
            },
            "links": {"self": f"{call.base}/api/profile-bulk-import-jobs/{job_id}/"},
        }
        self._import_jobs[job_id] = job
        self._import_errors[job_id] = import_errors
        self._log_job(
            IMPORT_JOB, targets[0].id if targets else None, len(entries), moment, id=job_id
        )
        return self._json_response(202, {"data": job}, "PostProfileImportJobResponse")

    def _op_get_bulk_import_profiles_job(self, call: _Call) -> FakeResponse:
        job = self._import_jobs.get(call.args["id"])
        if job is None:
            raise _problem(404, f"A job with id {call.args['id']} does not exist.")
        return self._json_response(
            200,
            {"data": job, "links": {"self": call.url}},
            "GetProfileImportJobResponseCompoundDocument",
        )

    # --- relationships ----------------------------------------------------------------------

    def _members_body(self, call: _Call, model: type) -> tuple[_List, list[str]]:
        target = self._existing_list(call.args["id"])
        document = self._read_body(call)
        try:
            parsed = model.from_dict(document)
        except Exception as exc:  # pydantic's ValidationError and the SDK's own TypeErrors
            raise _problem(400, f"Invalid request body: {exc}", pointer="/data") from exc
        if parsed is None or not parsed.data:
            raise _problem(400, "Give at least one profile.", pointer="/data")
        if len(parsed.data) > MAX_LIST_MEMBERS:
            raise _problem(
                400,
                f"A call takes at most {MAX_LIST_MEMBERS} profiles; got {len(parsed.data)}.",
                pointer="/data",
            )
        ids = [item.id for item in parsed.data]
        unknown = [
            error_object(404, f"A profile with id {pid} does not exist.", pointer=f"/data/{i}/id")
            for i, pid in enumerate(ids)
            if pid not in self._profiles
        ]
        if unknown:
            raise _Problem(404, unknown)
        return target, ids

    def _op_add_profiles_to_list(self, call: _Call) -> FakeResponse:
        target, ids = self._members_body(call, ListMembersAddQuery)
        for profile_id in ids:
            target.members[profile_id] = None
        self._log_job("add-profiles-to-list", target.id, len(ids), self.now())
        return FakeResponse(204, {}, b"")

    def _op_remove_profiles_from_list(self, call: _Call) -> FakeResponse:
        target, ids = self._members_body(call, ListMembersDeleteQuery)
        for profile_id in ids:
            target.members.pop(profile_id, None)
        self._log_job("remove-profiles-from-list", target.id, len(ids), self.now())
        return FakeResponse(204, {}, b"")

    def _op_get_profile_ids_for_list(self, call: _Call) -> FakeResponse:
        target = self._existing_list(call.args["id"])
        conditions = _compile_filter(
            call.params.get("filter"), _LIST_MEMBER_FILTERS, self._normalise_profile_value
        )
        members = []
        for profile_id in target.members:
            profile = self._profiles[profile_id]
            values = {"email": (profile.email or "").lower(), "phone_number": profile.phone_number}
            if all(
                (values[name] == operand) if operator == "equals" else (values[name] in operand)
                for operator, name, operand in conditions
            ):
                members.append(profile)
        page, links = _paginate(call, members, default_size=20, max_size=MAX_PAGE_SIZE)
        return self._json_response(
            200,
            {"data": [{"type": "profile", "id": p.id} for p in page], "links": links},
            "GetListProfilesRelationshipsResponseCollection",
        )
