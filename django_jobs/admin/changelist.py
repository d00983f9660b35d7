"""Lists that stay fast on big tables and safe from their URLs.

A capped count, sorting only by indexed columns, only the lookups the admin's own filters and
links use, and no filter or search text that no database can store.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.contrib.admin import ShowFacets, SimpleListFilter
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.formats import number_format
from django.utils.functional import cached_property
from django.utils.translation import gettext

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    _AdminBase = ModelAdmin[Any]
else:
    _AdminBase = object

COUNT_LIMIT = 10_000  # rows; a list longer than this shows "10,000+"
DEEPEST_PAGE_ROWS = 1_000_000  # rows a page may skip: paging deeper would scan for seconds


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


# NUL and lone surrogates: PostgreSQL refuses them in text, so no stored row holds them, and a
# query carrying one is a driver error rather than an empty result.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> bool:
    """Whether every database can store (and so compare with) this text."""
    return UNSTORABLE.search(text) is None


class GuardedChangeList(ChangeList):
    """A list whose filter or search text holds a NUL or a lone surrogate matches nothing."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset = super().get_queryset(request, exclude_parameters)
        texts = [self.query, *(v for values in self.get_filters_params().values() for v in values)]
        if not all(storable(str(text)) for text in texts):
            return queryset.none()
        return queryset


class IndexedChangeList(GuardedChangeList):
    """Sorts only by the columns in sortable_by, even when the URL asks for another one."""

    def get_ordering_field(self, field_name: Any) -> Any:
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None  # Django then skips this part of the "o" parameter
        return super().get_ordering_field(field_name)

    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
        """Break ties by the primary key in the direction of the column sorted by.

        Django appends "-pk" to every ordering; "name, -pk" is an order that no index on
        (name, id) gives, so the database would sort every row. "name, pk" and "-name, -pk"
        are that index read forwards and backwards.
        """
        ordering = super().get_ordering(request, queryset)
        pk_names = ("pk", "id", self.model._meta.pk.name)
        if len(ordering) == 2 and ordering[-1] in ("-pk", "pk") and isinstance(ordering[0], str):
            first = ordering[0]
            if first.lstrip("-") not in pk_names:
                ordering[-1] = "-pk" if first.startswith("-") else "pk"
        params = self.get_filters_params()
        unsorted = ORDER_VAR not in self.params  # the user did not sort by a column
        orderings = getattr(self.model_admin, "filter_orderings", {})
        for parameter, field in orderings.items():
            if parameter in params and unsorted:
                # Newest first by this filter's own column, which its index holds in order:
                # by id, the database would read every newer row before the first match.
                return [f"-{field}", "-pk"]
        return ordering


class UrlLookupsMixin(_AdminBase):
    """Only the lookups the admin's own filters and links use may come from the URL.

    Django lets a URL filter on any field of the model (`?lock_token__startswith=ab`), so a
    user who may only view could read a hidden column prefix by prefix, or make the database
    scan a whole table (`?last_traceback__icontains=x`). Anything else is refused with
    Django's DisallowedModelAdminLookup: 400 Bad Request.
    """

    link_lookups: tuple[str, ...] = ()  # lookups of links the admin builds, beyond its filters

    def allowed_lookups(self, request: HttpRequest | None) -> set[str]:
        allowed = set(self.link_lookups)
        list_filter = self.get_list_filter(request) if request is not None else self.list_filter
        for item in list_filter:
            if isinstance(item, type) and issubclass(item, SimpleListFilter):
                allowed.add(str(item.parameter_name))
            else:
                # A field's own filter (the admin's only other kind here) links by these two.
                path = item[0] if isinstance(item, (list, tuple)) else item
                allowed.update({f"{path}__exact", f"{path}__isnull"})
        return allowed

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup in self.allowed_lookups(request)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return GuardedChangeList


class BigTableMixin(UrlLookupsMixin):
    """For ModelAdmins of tables that grow large: capped count, index-only sorting."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER  # facet counts scan the whole table; the overview counts

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        """A paginator that counts far enough for the page asked for, and one page more.

        With a fixed limit, page 1,000 of a long list lay past the counted rows and Django
        sent the user back to page 1. The count reaches one page past the one asked for
        (skipping that many rows costs what the page itself costs), up to DEEPEST_PAGE_ROWS.
        """
        paginator = super().get_paginator(
            request, queryset, per_page, orphans, allow_empty_first_page
        )
        if isinstance(paginator, CappedCountPaginator):
            try:
                page = int(request.GET.get("p", 1))
            except ValueError:
                page = 1
            if (page - 1) * per_page >= paginator.count_limit:
                deepest = min((page + 1) * per_page, DEEPEST_PAGE_ROWS)
                paginator.count_limit = max(paginator.count_limit, deepest)
        return paginator

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return IndexedChangeList
