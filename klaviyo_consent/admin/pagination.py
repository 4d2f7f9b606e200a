"""A changelist paginator that never counts a million rows to print "1,000,000 profiles".

Django's changelist counts its rows twice per page (``COUNT(*)`` of the filtered and, unless
``show_full_result_count = False``, the whole table). On PostgreSQL a ``COUNT(*)`` reads every
row (MVCC keeps no row count). Here an unfiltered changelist reads the planner's estimate
(``pg_class.reltuples``, kept by ANALYZE/autovacuum), and a filtered one counts at most
``COUNT_CAP`` rows. Small tables and other databases are counted exactly.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.utils.functional import cached_property

from klaviyo_consent.services.reports import ESTIMATE_ABOVE, estimated_rows

#: A filtered changelist counts at most this many rows, then says "at least".
COUNT_CAP = 1_000


def is_unfiltered(queryset: Any) -> bool:
    query = queryset.query
    return not query.where.children and not query.distinct and not query.combinator


class EstimatedCountPaginator(Paginator):
    """``count`` is exact for small tables, an estimate for a large unfiltered one, and at most
    ``COUNT_CAP`` + 1 for a filtered one (``capped`` says so)."""

    capped = False
    estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not hasattr(queryset, "query"):
            return super().count
        if is_unfiltered(queryset):
            estimate = estimated_rows(queryset)
            if estimate is not None and estimate > ESTIMATE_ABOVE:
                self.estimated = True
                return estimate
            return queryset.count()
        found = queryset.order_by()[: COUNT_CAP + 1].count()
        if found > COUNT_CAP:
            self.capped = True
        return found
