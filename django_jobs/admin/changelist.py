"""Lists that stay fast on big tables: a capped count, and sorting only by indexed columns."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.contrib.admin import ShowFacets
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.utils.formats import number_format
from django.utils.functional import cached_property
from django.utils.translation import gettext

COUNT_LIMIT = 10_000  # rows; a list longer than this shows "10,000+"


class CountAtLeast(int):
    """A count that stopped at a limit; it prints as "10,000+" wherever the admin shows it.

    An int, so the admin's comparisons and ngettext() work on it unchanged.
    """

    def __str__(self) -> str:
        if django_settings.USE_THOUSAND_SEPARATOR:
            # Django's number formatting then groups the digits of str(): give it digits only.
            return str(int(self))
        return gettext("%(count)s+") % {"count": number_format(int(self), force_grouping=True)}


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_LIMIT + 1 rows, with no ORDER BY, instead of an exact COUNT(*).

    An exact count of a large table is a full scan on every page load (PostgreSQL's MVCC
    cannot answer it from an index alone). Past the limit the list shows "10,000+" and pages
    up to the limit; filters, search and sorting reach the rest. This is plain ORM, so it is
    the same on every database, unlike a planner estimate.
    """

    count_limit = COUNT_LIMIT

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if not hasattr(object_list, "order_by"):
            return len(object_list)
        found = object_list.order_by().values("pk")[: self.count_limit + 1].count()
        return CountAtLeast(self.count_limit) if found > self.count_limit else found


class IndexedChangeList(ChangeList):
    """Sorts only by the columns in sortable_by, even when the URL asks for another one."""

    def get_ordering_field(self, field_name: Any) -> Any:
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None  # Django then skips this part of the "o" parameter
        return super().get_ordering_field(field_name)


class BigTableMixin:
    """For ModelAdmins of tables that grow large: capped count, index-only sorting."""

    paginator: type[Paginator] = CappedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER  # facet counts scan the whole table; the overview counts

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return IndexedChangeList
