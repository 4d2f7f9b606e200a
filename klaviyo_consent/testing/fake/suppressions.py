"""Bulk suppression jobs (email only): suppress, unsuppress, and the job-status reads."""

from __future__ import annotations

from typing import Any

from openapi_client.models.profile_suppression_create_query_resource_object import (
    ProfileSuppressionCreateQueryResourceObject,
)
from openapi_client.models.profile_suppression_delete_query_resource_object import (
    ProfileSuppressionDeleteQueryResourceObject,
)
from openapi_client.models.suppression_create_job_create_query import (
    SuppressionCreateJobCreateQuery,
)
from openapi_client.models.suppression_delete_job_create_query import (
    SuppressionDeleteJobCreateQuery,
)

from klaviyo_consent.klaviyo import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from klaviyo_consent.testing.fake.errors import _Problem, _problem, error_object
from klaviyo_consent.testing.fake.filters import _paginate
from klaviyo_consent.testing.fake.records import (
    _EMAIL_RE,
    _SUPPRESS_JOB,
    _UNSUPPRESS_JOB,
    INVALID_EMAIL_DETAIL,
    MAX_SUPPRESS_PROFILES,
    MAX_UNSUPPRESS_PROFILES,
    FakeResponse,
    _Call,
    _iso,
)
from klaviyo_consent.testing.fake.state import AccountState

_JOB_PATHS = {
    _SUPPRESS_JOB: "/api/profile-suppression-bulk-create-jobs",
    _UNSUPPRESS_JOB: "/api/profile-suppression-bulk-delete-jobs",
}


class SuppressionJobs(AccountState):
    """Bulk suppression jobs (suppress, unsuppress) and their status reads."""

    # --- suppression jobs ------------------------------------------------------------------

    def _op_bulk_suppress_profiles(self, call: _Call) -> FakeResponse:
        return self._suppression_job(call, _SUPPRESS_JOB)

    def _op_bulk_unsuppress_profiles(self, call: _Call) -> FakeResponse:
        return self._suppression_job(call, _UNSUPPRESS_JOB)

    def _suppression_job(self, call: _Call, job_type: str) -> FakeResponse:
        document = self._read_body(call)
        if job_type == _SUPPRESS_JOB:
            query = self._sdk_validate(
                SuppressionCreateJobCreateQuery,
                ProfileSuppressionCreateQueryResourceObject,
                document,
            )
        else:
            query = self._sdk_validate(
                SuppressionDeleteJobCreateQuery,
                ProfileSuppressionDeleteQueryResourceObject,
                document,
            )
        profiles = query.data.attributes.profiles
        entries = profiles.data if profiles is not None else []
        relationships = query.data.relationships
        segment = getattr(getattr(relationships, "segment", None), "data", None)
        target = self._job_list(relationships)
        if segment is not None:
            raise _problem(
                404,
                f"A segment with id {segment.id} does not exist.",
                pointer="/data/relationships/segment/data/id",
            )
        if profiles is None and target is None:
            raise _problem(
                400, "Provide profiles, a list or a segment.", pointer="/data/attributes/profiles"
            )
        limit = MAX_SUPPRESS_PROFILES if job_type == _SUPPRESS_JOB else MAX_UNSUPPRESS_PROFILES
        if len(entries) > limit:
            raise _problem(
                400,
                f"A job can take at most {limit} emails; got {len(entries)}.",
                pointer="/data/attributes/profiles/data",
            )
        errors = [
            error_object(
                400,
                INVALID_EMAIL_DETAIL,
                MAX_SUPPRESS_PROFILES,
                MAX_UNSUPPRESS_PROFILES,
                pointer=f"/data/attributes/profiles/data/{index}/attributes/email",
            )
            for index, entry in enumerate(entries)
            if not _EMAIL_RE.match(entry.attributes.email)
        ]
        if errors:
            raise _Problem(400, errors)

        moment = self.now()
        stamp = _iso(moment)
        emails = [entry.attributes.email for entry in entries]
        if target is not None:
            emails += [
                self._profiles[pid].email for pid in target.members if self._profiles[pid].email
            ]
        skipped = 0
        for email in emails:
            profile = self._find(None, email, None)
            if job_type == _SUPPRESS_JOB:
                profile = profile or self._create_profile(email, None, moment)
                self._add_suppression(profile, "USER_SUPPRESSED", stamp)
            elif profile is None:
                skipped += 1
                continue
            else:
                marketing = profile.email_marketing
                kept = [
                    item for item in marketing["suppression"] if item["reason"] != "USER_SUPPRESSED"
                ]
                if len(kept) == len(marketing["suppression"]):
                    continue
                marketing.update(
                    suppression=kept, can_receive_email_marketing=not kept, last_updated=stamp
                )
            profile.updated = moment
        job_id = self._new_profile_id(moment)
        job = {
            "type": job_type,
            "id": job_id,
            "attributes": {
                "status": "complete",
                "created_at": stamp,
                "total_count": len(emails),
                "completed_count": len(emails) - skipped,
                "completed_at": stamp,
                "skipped_count": skipped,
            },
            "links": {"self": f"{call.base}{_JOB_PATHS[job_type]}/{job_id}/"},
        }
        self._suppression_jobs[job_type][job_id] = job
        self._log_job(job_type, target.id if target else None, len(emails), moment, id=job_id)
        model = (
            "PostBulkProfileSuppressionsCreateJobResponse"
            if job_type == _SUPPRESS_JOB
            else "PostBulkProfileSuppressionsRemoveJobResponse"
        )
        return self._json_response(202, {"data": _with_base(job, call.base)}, model)

    def _op_get_bulk_suppress_profiles_job(self, call: _Call) -> FakeResponse:
        return self._get_suppression_job(
            call, _SUPPRESS_JOB, "GetBulkProfileSuppressionsCreateJobResponse"
        )

    def _op_get_bulk_unsuppress_profiles_job(self, call: _Call) -> FakeResponse:
        return self._get_suppression_job(
            call, _UNSUPPRESS_JOB, "GetBulkProfileSuppressionsRemoveJobResponse"
        )

    def _get_suppression_job(self, call: _Call, job_type: str, model: str) -> FakeResponse:
        job = self._suppression_jobs[job_type].get(call.args["id"])
        if job is None:
            raise _problem(404, f"A job with id {call.args['id']} does not exist.")
        return self._json_response(
            200, {"data": _with_base(job, call.base), "links": {"self": call.url}}, model
        )

    def _op_get_bulk_suppress_profiles_jobs(self, call: _Call) -> FakeResponse:
        return self._list_suppression_jobs(
            call, _SUPPRESS_JOB, "GetBulkProfileSuppressionsCreateJobResponseCollection"
        )

    def _op_get_bulk_unsuppress_profiles_jobs(self, call: _Call) -> FakeResponse:
        return self._list_suppression_jobs(
            call, _UNSUPPRESS_JOB, "GetBulkProfileSuppressionsRemoveJobResponseCollection"
        )

    def _list_suppression_jobs(self, call: _Call, job_type: str, model: str) -> FakeResponse:
        jobs = [_with_base(job, call.base) for job in self._suppression_jobs[job_type].values()]
        page, links = _paginate(call, jobs, default_size=DEFAULT_PAGE_SIZE, max_size=MAX_PAGE_SIZE)
        return self._json_response(200, {"data": page, "links": links}, model)


def _with_base(job: dict[str, Any], base: str) -> dict[str, Any]:
    link = job["links"]["self"]
    path = link[link.index("/api/") :]
    return {**job, "attributes": dict(job["attributes"]), "links": {"self": f"{base}{path}"}}
