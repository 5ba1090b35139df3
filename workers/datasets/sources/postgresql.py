"""A query against the company's own PostgreSQL database.

The query is fixed by the operator (settings.DATA_SOURCE_QUERIES, from a file the operator writes;
an API client names it, never sends SQL). It runs in a READ ONLY transaction with a statement
timeout (rows stream from the server in chunks), connected with a DSN the operator keeps as a
secret. Every read runs the query again: what the workers train on is
what the company's table holds now, and the content fingerprints show whether that changed.

The configuration the source receives is resolved on the Django side
(workers.datasets.source_reading): ``{"kind": "postgresql", "query": name, "sql": ...,
"dsn": ..., "timeout_seconds": ...}``; the dataset row stores only the kind and the query's name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from workers.datasets.sources.base import DataSource, SourceError

FETCH_ROWS = 5000


class PostgresQuerySource(DataSource, name="postgresql"):
    holds_file = False

    @classmethod
    def config_problem(cls, config: Mapping[str, Any]) -> str | None:
        unknown = sorted(set(config) - {"kind", "query"})
        if unknown:
            return (f"a postgresql source takes only the name of a query the operator configured "
                    f"(\"query\"), not {unknown[0]!r}: SQL is never sent over the API")
        if not isinstance(config.get("query"), str) or not config["query"]:
            return "a postgresql source names the operator's query: {\"kind\": \"postgresql\", \"query\": name}"
        return None

    def _connect(self):
        import psycopg

        try:
            connection = psycopg.connect(self.config["dsn"], autocommit=False, connect_timeout=10,
                                         application_name="deletion-platform source reader")
        except psycopg.Error as exc:
            raise SourceError([(0, f"cannot connect to the source database of query "
                                   f"{self.config['query']!r}: {str(exc).strip()[:300]}")]) from None
        connection.read_only = True
        return connection

    def _fetch(self) -> tuple[list[str], list[tuple]]:
        """Run the query once (columns and rows come from the same snapshot) and keep its rows.
        Rows stream from the server in chunks; any statement runs, so a write is refused by the
        READ ONLY transaction itself, not by a guess at the SQL."""
        if getattr(self, "_result", None) is not None:
            return self._result
        import psycopg
        from psycopg import errors

        name = self.config["query"]
        milliseconds = int(float(self.config["timeout_seconds"]) * 1000)
        rows: list[tuple] = []
        with self._connect() as connection:
            cursor = connection.cursor()
            try:
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(milliseconds)])
                rows.extend(cursor.stream(self.config["sql"], size=FETCH_ROWS))
            except errors.ReadOnlySqlTransaction as exc:
                raise SourceError([(0, f"query {name!r} tries to write: it runs in a READ ONLY transaction, "
                                       f"which refused it ({str(exc).strip()[:200]})")]) from None
            except errors.QueryCanceled:
                raise SourceError([(0, f"query {name!r} ran past its timeout of "
                                       f"{self.config['timeout_seconds']} s and was cancelled")]) from None
            except psycopg.Error as exc:
                raise SourceError([(0, f"query {name!r} failed: {str(exc).strip()[:300]}")]) from None
            names = [d.name for d in cursor.description or ()]
            connection.rollback()
        if not rows:
            raise SourceError([(0, f"query {name!r} returned no rows")])
        self._result = (names, rows)
        return self._result

    def columns(self) -> list[str]:
        return self._fetch()[0]

    def rows(self) -> Iterator[tuple[int, Mapping[str, Any]]]:
        names, rows = self._fetch()
        for number, values in enumerate(rows, start=1):
            yield number, dict(zip(names, (_plain(v) for v in values), strict=True))


def _plain(value: Any) -> Any:
    """A NUMERIC column arrives as Decimal: a feature is a float."""
    return float(value) if isinstance(value, Decimal) else value
