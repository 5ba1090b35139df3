"""What the data-source tests share: the company's own PostgreSQL database (a second database on
the test server, not the platform's), and a dataset registered and imported over the REST API."""

from __future__ import annotations

import contextlib
import io
import os

import pytest

CUSTOMERS = """
CREATE TABLE customers (
    customer_no text PRIMARY KEY,
    email text,
    tenure_months integer NOT NULL,
    monthly_spend numeric(10, 2) NOT NULL,
    support_calls integer NOT NULL,
    churned integer NOT NULL,
    cohort text NOT NULL
);
"""


class CompanyDatabase:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def execute(self, sql: str, params=None) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(sql, params)


@contextlib.contextmanager
def second_database(prefix: str):
    """A database of its own on the test server (not the platform's), dropped afterwards."""
    import psycopg
    from django.conf import settings
    from psycopg.conninfo import make_conninfo

    default = settings.DATABASES["default"]
    server = make_conninfo(host=default["HOST"], port=default.get("PORT") or None, user=default["USER"],
                           password=default.get("PASSWORD") or None)
    name = f"{prefix}_{os.getpid()}"

    def drop_then(sql: str | None) -> None:
        with psycopg.connect(make_conninfo(server, dbname="postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            if sql:
                admin.execute(sql)

    drop_then(f"CREATE DATABASE {name}")
    try:
        yield CompanyDatabase(make_conninfo(server, dbname=name))
    finally:
        drop_then(None)


@pytest.fixture
def company_database(db, monkeypatch):
    """A database of the company's (its own customers table), reachable with a DSN kept as a secret
    in the environment (COMPANY_WAREHOUSE_DSN); the test sets the operator's queries."""
    with second_database("company_warehouse") as company:
        company.execute(CUSTOMERS)
        monkeypatch.setenv("COMPANY_WAREHOUSE_DSN", company.dsn)
        yield company


def operator_queries(settings, **queries: str | tuple[str, float]) -> None:
    """The operator's configuration: name -> SQL (or (SQL, timeout in seconds)) on the company's database."""
    settings.DATA_SOURCE_QUERIES = {
        name: {"sql": q if isinstance(q, str) else q[0], "dsn_env": "COMPANY_WAREHOUSE_DSN",
               "timeout_seconds": 30 if isinstance(q, str) else q[1]}
        for name, q in queries.items()}


def parquet_bytes(rows: list[dict], schema=None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return out.getvalue()


def source_dataset_over_api(client, *, name: str, modality: str, source: dict, schema: dict, body: bytes | None = None,
                            version: str = "1"):
    """Register a dataset read from ``source`` and import its records (``body``: a file source's
    file). Returns (registration response, import response or None when registration failed)."""
    registered = client.post("/api/v1/datasets/", {
        "name": name, "version": version, "modality": modality, "purpose": "Churn prediction for retention offers.",
        "legal_basis": "legitimate_interests", "source": source, "record_schema": schema}, format="json")
    if registered.status_code != 201:
        return registered, None
    imported = client.generic("POST", f"/api/v1/datasets/{registered.json()['id']}/import/", body or b"",
                              content_type="application/octet-stream")
    return registered, imported


BREAST_CANCER_SCHEMA = {"record_key": "record_id", "subjects": {"patient_email": "email"},
                        "features": [f"f{j}" for j in range(30)], "label": "diagnosis", "split": "split"}


def breast_cancer_rows(*, rows_per_subject: int = 3, test_every: int = 5, limit: int | None = None) -> list[dict]:
    """scikit-learn's breast-cancer table as a company would export it: one row per examination,
    ``rows_per_subject`` examinations per patient (a subject over several rows), split by patient."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rows = []
    for i, (x, y) in enumerate(zip(data.data[:limit], data.target[:limit], strict=True)):
        patient = i // rows_per_subject
        rows.append({"record_id": f"exam-{i:04d}", "patient_email": f"patient.{patient:04d}@example.org",
                     **{f"f{j}": float(v) for j, v in enumerate(x)}, "diagnosis": int(y),
                     "split": "test" if patient % test_every == 0 else "train"})
    return rows
