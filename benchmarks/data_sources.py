"""Data sources: import and read rates for Parquet, CSV, JSON Lines and a PostgreSQL query.

For each source the same synthetic table (a record key, a subject's e-mail address shared by 1 to 4
rows, ``--features`` numeric columns, a label, a split) is imported through the platform's own path
(`workers.data_sources.dataset_source_import`: schema checks, subjects pseudonymised, content
fingerprinted and stored encrypted, the file kept in the artifact store), then read as the workers
read it (`source_split`: the source read again, erased records excluded, every record's content
fingerprint checked, tensors built), then rewritten without 100 erased records (files only).
The PostgreSQL source reads a table in a second database on the embedded server. Prints a table;
the last stdout line is one JSON object with the figures.

    python benchmarks/data_sources.py                 # 100,000 rows per source
    python benchmarks/data_sources.py --rows 20000    # a quick run
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402

SOURCES = ("parquet", "csv", "jsonl", "postgresql")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    return parser.parse_args()


def table(rows: int, features: int, seed: int, domain: str) -> list[dict]:
    rng = random.Random(seed)
    out, subject = [], 0
    while len(out) < rows:
        for _ in range(rng.randint(1, 4)):
            if len(out) == rows:
                break
            out.append({"record_key": f"r{len(out):08d}", "email": f"person.{subject:07d}@{domain}.example.org",
                        **{f"x{j}": round(rng.gauss(0, 1), 6) for j in range(features)},
                        "label": rng.randint(0, 1), "split": "test" if subject % 5 == 0 else "train"})
        subject += 1
    return out


def encoded(kind: str, rows: list[dict]) -> bytes:
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), out)
        return out.getvalue()
    if kind == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return text.getvalue().encode()
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def company_table(rows: list[dict], features: int) -> str:
    """Load the rows into a table of a second database; returns its DSN."""
    import psycopg
    from django.conf import settings
    from psycopg.conninfo import make_conninfo

    default = settings.DATABASES["default"]
    server = make_conninfo(host=default["HOST"], port=default.get("PORT") or None, user=default["USER"],
                           password=default.get("PASSWORD") or None)
    with psycopg.connect(make_conninfo(server, dbname="postgres"), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS bench_company WITH (FORCE)")
        admin.execute("CREATE DATABASE bench_company")
    dsn = make_conninfo(server, dbname="bench_company")
    columns = ", ".join(f"x{j} double precision" for j in range(features))
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE people (record_key text PRIMARY KEY, email text, {columns}, "
                           "label integer, split text)")
        with connection.cursor().copy(f"COPY people ({', '.join(rows[0])}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(list(row.values()))
    return dsn


def main() -> None:
    args = parse_args()
    django_setup(data_dir=args.data_dir, fresh_database="bench_sources")
    import pyarrow.parquet  # noqa: F401  (imported once, not inside the first timing)
    import torch  # noqa: F401
    from django.conf import settings

    from models_registry import services
    from models_registry.models import DataRecord
    from models_registry.services import records_erase
    from workers.data_sources import dataset_source_import, source_file_rewrite, source_split

    schema = {"record_key": "record_key", "subjects": {"email": "email"},
              "features": [f"x{j}" for j in range(args.features)], "label": "label", "split": "split"}
    results = {}
    for kind in args.sources:
        rows = table(args.rows, args.features, args.seed, kind)  # each source its own people
        data = None
        source = {"kind": kind}
        if kind == "postgresql":
            os.environ["BENCH_COMPANY_DSN"] = company_table(rows, args.features)
            settings.DATA_SOURCE_QUERIES = {"people": {"sql": "SELECT * FROM people", "dsn_env": "BENCH_COMPANY_DSN",
                                                       "timeout_seconds": 600}}
            source = {"kind": "postgresql", "query": "people"}
        else:
            data = encoded(kind, rows)
        dataset = services.dataset_register(name=f"bench-{kind}", version="1", modality="tabular",
                                            purpose="benchmark", legal_basis="consent", source=source,
                                            record_schema=schema)
        started = time.perf_counter()
        imported = dataset_source_import(dataset=dataset, data=data)
        import_seconds = time.perf_counter() - started
        dataset.refresh_from_db()
        started = time.perf_counter()
        train = source_split(dataset, "train")
        read_seconds = time.perf_counter() - started
        erased = list(DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[:100])
        records_erase(records=erased, reason="benchmark")
        started = time.perf_counter()
        rewritten = source_file_rewrite(dataset=dataset, keys={r.external_key for r in erased})
        rewrite_seconds = time.perf_counter() - started
        results[kind] = {
            "rows": imported.rows, "subjects": imported.subjects_created,
            "file_bytes": len(data) if data else None,
            "import_seconds": round(import_seconds, 2), "import_rows_per_second": round(imported.rows / import_seconds),
            "read_train_records": len(train), "read_seconds": round(read_seconds, 2),
            "read_rows_per_second": round(args.rows / read_seconds),
            "rewrite_seconds": round(rewrite_seconds, 2) if rewritten else None,
        }
        print(f"{kind:>10}: import {results[kind]['import_rows_per_second']:>8,} rows/s  "
              f"read {results[kind]['read_rows_per_second']:>8,} rows/s  "
              f"({imported.rows:,} rows, {imported.subjects_created:,} subjects, train split {len(train):,})",
              flush=True)
    print(json.dumps({"benchmark": "data_sources", "rows": args.rows, "features": args.features,
                      "machine": f"{platform.machine()}, {os.cpu_count()} cores", "sources": results}))


if __name__ == "__main__":
    main()
