"""The search box of the job and run lists: every term is an equality an index can answer.

A search for text anywhere in a job's JSON (`data::text LIKE '%alice%'`) reads every row:
seconds on a million jobs. Here each term is one of:

- `key:value` or `key=value`: the data holds that value at that key (`email:ada@example.com`,
  `order_id=1234`, `customer.id:7` for a nested key). A value that reads as a JSON number,
  `true`, `false` or `null` matches that value and the same text as a string. On PostgreSQL
  this is `data @> {...}`, served by a GIN index (migrations 0007 and 0018); MariaDB's
  JSON_CONTAINS and SQLite's comparison of the key's value read the whole table. `key:value`
  also matches a job whose unique key is exactly the term (`report:3`).
- a whole number (`1234` or `#1234`): the job with that id, or that unique key;
- anything else: the jobs with exactly that name, or that unique key.

Every term must match. Quotes keep spaces in a term (`email:"a b@example.com"`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.db import connections
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext_lazy as _

JOB_SEARCH_HELP = _(
    "Search by key:value in the data (email:ada@example.com, order_id:1234), by job id "
    "(#1234), by unique key, or by exact job name. Every term must match."
)
RUN_SEARCH_HELP = _("Search by exact worker id, job name, or run id (#1234).")

KEY_VALUE = re.compile(r"^([^:=\s]+)[:=](.+)$", re.DOTALL)
NUMBER = re.compile(r"^#?(\d{1,18})$")  # fits a 64-bit primary key
MAX_TERMS = 10  # terms beyond these are ignored: each one is another condition to plan


def terms(search: str) -> list[str]:
    """The search text split on spaces; quoted parts keep theirs."""
    words = [_unquote(word) for word in smart_split(search)]
    return [word for word in words if word][:MAX_TERMS]


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] in "\"'" and word[-1] == word[0]:
        return unescape_string_literal(word)
    return word


def json_values(text: str) -> list[Any]:
    """The values a typed `value` stands for: the text, and the JSON scalar it spells."""
    if len(text) >= 2 and text[0] in "\"'" and text[-1] == text[0]:
        return [unescape_string_literal(text)]
    values: list[Any] = [text]
    try:
        parsed = json.loads(text)
    except ValueError:
        return values
    finite = not isinstance(parsed, float) or abs(parsed) < float("inf")  # NaN is not < inf
    if parsed is None or (isinstance(parsed, (bool, int, float)) and finite):
        values.append(parsed)
    return values


def data_q(path: list[str], values: list[Any], using: str, alias: str) -> tuple[Q, dict[str, Any]]:
    """The data holds one of `values` at the key `path` (a.b.c is nested).

    Returns the condition and the aliases it names (the key's value, elsewhere than on
    PostgreSQL).
    """
    condition = Q()
    if connections[using].features.supports_json_field_contains:
        # PostgreSQL: jsonb containment, which a GIN jsonb_path_ops index answers. MariaDB and
        # MySQL: JSON_CONTAINS, a scan, but one that tells the number 1 from the string "1".
        for value in values:
            nested: Any = value
            for key in reversed(path):
                nested = {key: nested}
            condition |= Q(data__contains=nested)
        if connections[using].vendor == "postgresql":
            # Always true of a match; stated so that the planner proves the GIN index's
            # condition, which leaves out the jobs without data (migration 0018).
            condition &= ~Q(data={})
        return condition, {}
    # SQLite: the key's value as an alias, so any key text works (one holding "__" too) and
    # the comparison is the JSON one Django makes for data__key=value.
    target: Any = "data"
    for key in path:
        target = KeyTransform(key, target)
    for value in values:
        condition |= Q(**{alias: value})
    return condition, {alias: target}


def job_search_q(term: str, using: str, alias: str = "search_0") -> tuple[Q, dict[str, Any]]:
    """One search term of the job list as a condition (see the module's docstring)."""
    number = NUMBER.match(term)
    if number:
        return Q(pk=int(number.group(1))) | Q(unique_key=term), {}
    pair = KEY_VALUE.match(term)
    if pair:
        key, value = pair.groups()
        path = [part for part in key.split(".") if part]
        if not path:
            return Q(unique_key=term), {}
        found, aliases = data_q(path, json_values(value), using, alias)
        if term[len(key)] == ":":
            found |= Q(unique_key=term)
        return found, aliases
    return Q(name=term) | Q(unique_key=term), {}


def search_jobs(queryset: QuerySet[Any], search: str, using: str) -> QuerySet[Any]:
    for i, term in enumerate(terms(search)):
        condition, aliases = job_search_q(term, using, alias=f"search_{i}")
        queryset = queryset.alias(**aliases).filter(condition)
    return queryset


def search_runs(queryset: QuerySet[Any], search: str) -> QuerySet[Any]:
    for term in terms(search):
        number = NUMBER.match(term)
        condition = Q(worker_id=term) | Q(job_name=term)
        if number:
            condition |= Q(pk=int(number.group(1)))
        queryset = queryset.filter(condition)
    return queryset
