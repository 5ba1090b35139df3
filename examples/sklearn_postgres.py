"""A churn model the way a company builds it: a scikit-learn pipeline fitted on rows its own SQL reads
from its own PostgreSQL (the CRM; not the platform's database), registered on the platform with the
accounts it was fitted on; then one customer asks to be erased.

    python examples/sklearn_postgres.py --url http://127.0.0.1:8000 --dsn "$CRM_DSN" \\
        --engineer-token "$ENGINEER" --dpo-token "$DPO"

The platform reads the same table itself, through a query its operator fixed (clients only name it):
``DATA_SOURCE_QUERIES='{"crm-accounts": {"sql": "SELECT * FROM crm_accounts", "dsn_env": "CRM_DSN"}}'``
in the environment of the web process and the workers (see examples/README.md).

Policy: exact. The platform refits the pipeline on the kept accounts (``retrain``), reading them again
from the CRM, and the audit refits it once more from the registry's records and compares every fitted
number bit for bit (``replay_retrain``). Verdict PASS, request COMPLETED; the report says that the
CRM table still holds the customer's rows (the platform cannot write it), so the company deletes them.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import erasure
from erasure import say

QUERY = "crm-accounts"  # the name the operator gave the platform's query of this table
TABLE = """CREATE TABLE IF NOT EXISTS crm_accounts (
    account_no text PRIMARY KEY, email text NOT NULL, tenure_months integer NOT NULL,
    monthly_spend numeric(10, 2) NOT NULL, support_calls integer NOT NULL, churned integer NOT NULL,
    cohort text NOT NULL)"""
FEATURES = ["tenure_months", "monthly_spend", "support_calls"]
FIRST = ["ann", "ben", "carla", "dev", "eva", "farid", "gita", "hugo", "ines", "jon", "kemi", "lars"]
LAST = ["berg", "costa", "dahl", "ekwueme", "fischer", "garcia", "haddad", "ito", "jensen", "kowalski"]


def crm_accounts(count: int, tag: str) -> list[tuple]:
    """Synthetic customers: one or two accounts each (one person over several rows), a churn label that
    follows tenure and support calls, and a cohort for the model's evaluation."""
    rng = random.Random(7)
    rows, person = [], 0
    while len(rows) < count:
        email = f"{FIRST[person % len(FIRST)]}.{LAST[person % len(LAST)]}.{person}@customers-{tag}.example.org"
        for account in range(2 if person % 3 == 0 else 1):
            tenure, calls = rng.randint(1, 60), rng.randint(0, 7)
            churned = int(calls >= 4 and tenure < 24 or rng.random() < 0.1)
            rows.append((f"A{person:05d}-{account}", email, tenure, round(rng.uniform(15, 120), 2), calls, churned,
                         "test" if person % 5 == 4 else "train"))
        person += 1
    return rows[:count]


def main(argv: list[str] | None = None) -> int:
    import psycopg
    import skops.io
    from lineage_client import MembershipRecorder, PlatformClient
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    erasure.platform_arguments(parser)
    parser.add_argument("--dsn", default=os.environ.get("CRM_DSN"),
                        help="the CRM database (CRM_DSN); its crm_accounts table is (re)filled with "
                             "synthetic customers")
    parser.add_argument("--query", default=QUERY, help="the name of the operator's query of crm_accounts")
    args = parser.parse_args(argv)
    erasure.required_tokens(parser, args)
    if not args.dsn:
        parser.error("--dsn (or CRM_DSN) is needed: the CRM's PostgreSQL")

    say("== The CRM (stands in for the company's own): synthetic customers in crm_accounts")
    accounts = crm_accounts(120 if args.small else 2000, args.tag)
    with psycopg.connect(args.dsn, autocommit=True) as crm:
        crm.execute(TABLE)
        with crm.transaction():
            crm.execute("DELETE FROM crm_accounts")
            with crm.cursor() as cursor:
                cursor.executemany("INSERT INTO crm_accounts VALUES (%s, %s, %s, %s, %s, %s, %s)", accounts)
    say(f"  {len(accounts)} accounts of {len({a[1] for a in accounts})} customers")

    say("== The company's pipeline: its own SQL, its own scikit-learn pipeline")
    with psycopg.connect(args.dsn) as crm:
        rows = crm.execute("SELECT account_no, tenure_months, monthly_spend, support_calls, churned "
                           "FROM crm_accounts WHERE cohort = 'train' ORDER BY account_no").fetchall()
    recorder = MembershipRecorder()
    recorder.record(row[0] for row in rows)  # every account the fit below uses
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    pipeline.fit([[float(v) for v in row[1:4]] for row in rows], [row[4] for row in rows])
    say(f"  fitted on {len(recorder)} accounts; training accuracy "
        f"{pipeline.score([[float(v) for v in r[1:4]] for r in rows], [r[4] for r in rows]):.2f}")

    say("== On the platform (ml_engineer): the dataset by its query, the model, its run and lineage, the weights")
    engineer = PlatformClient(args.url, args.engineer_token)
    dataset = engineer.register_dataset(
        name=f"crm-accounts-{args.tag}", version="1", modality="tabular",
        purpose="Churn prediction for retention offers",
        legal_basis="legitimate_interests", source={"kind": "postgresql", "query": args.query},
        record_schema={"record_key": "account_no", "subjects": {"email": "email"}, "features": FEATURES,
                       "label": "churned", "split": "cohort"})
    imported = engineer.import_dataset_file(dataset["id"])
    say(f"  dataset {dataset['id']}: {imported.get('rows')} records read through the query {args.query!r}")
    model = f"churn-{args.tag}"
    engineer.register_model(name=model, task="classification", training_recipe="sklearn",
                            architecture={"name": "sklearn",
                                          "config": {"in_features": len(FEATURES), "num_classes": 2}},
                            unlearning_policy={"replay_retrain": True})
    run = engineer.register_training_run(model=model, recipe="sklearn", seed=5, code_version="churn-pipeline 4.2",
                                         config={"seed": 5}, datasets=[dataset["id"]])
    engineer.upload_membership(run["id"], dataset["id"], recorder.rows())
    version = engineer.upload_weights(model, run["id"], skops.io.dumps(pipeline))
    say(f"  {model} v{version['version']} registered (run {run['id']}, {len(recorder)} accounts in its lineage)")
    shadows = engineer.request("POST", "/api/v1/shadow-jobs/", json_body={
        "model": model, "version": version["version"], "count": 2 if args.small else 16})
    erasure.job_done(engineer, shadows)
    say(f"  {shadows['count']} shadow models trained for the audits")

    say("== A customer asks to be erased")
    person = next(a[1] for a in accounts if a[0].endswith("-1") and a[6] == "train")  # one with two accounts
    desk = erasure.ErasureDesk(args.url, dpo_token=args.dpo_token, serving_token=args.engineer_token)
    ending = erasure.take_to_the_end(desk, {"email": person}, out=args.out)
    if ending.report is not None:
        for entry in ending.report["report"]["scope"]["datasets"]:
            if entry.get("source"):
                say(f"  the report on the CRM: {entry['source']}")
        with psycopg.connect(args.dsn, autocommit=True) as crm:
            gone = crm.execute("DELETE FROM crm_accounts WHERE email = %s", [person]).rowcount
        say(f"  the company deletes the customer's {gone} row(s) from its CRM itself")
    return erasure.conclude(ending)


if __name__ == "__main__":
    sys.exit(main())
