"""Every read of a dataset leaves out what is on the suppression list (issue 22, finding 3): an
erased person's e-mail address filled in on a kept row of the company's table, their content copied
under a kept key, a folder whose files came back with them. The read counts what it left out."""

from __future__ import annotations

import json

import pytest

from models_registry import services
from models_registry.models import DataRecord, Dataset
from tests.company_sources import operator_queries, source_dataset_over_api

pytestmark = pytest.mark.django_db

CHURN_SCHEMA = {"record_key": "customer_no", "subjects": {"email": "email"},
                "features": ["tenure_months", "monthly_spend", "support_calls"], "label": "churned", "split": "cohort"}


def _erase(records) -> None:
    records = list(records)
    services.records_erase(records=records, reason="request 1")
    for subject in {r.subject for r in records}:
        services.subject_suppress(subject=subject, reason="request 1")


def test_a_company_tables_row_of_an_erased_person_is_not_read(api_client_for, company_database, settings):
    from workers.data_sources import dataset_split

    for i in range(20):  # K0014 and K0015 are customer.007's; every fifth row is in the test cohort
        company_database.execute("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                 [f"K{i:04d}", f"customer.{i // 2:03d}@example.org", 1 + i, 20 + i, i % 5,
                                  i % 2, "test" if i % 5 == 0 else "train"])
    operator_queries(settings, customers="SELECT * FROM customers")
    registered, _ = source_dataset_over_api(api_client_for("ml_engineer"), name="churn", modality="tabular",
                                            source={"kind": "postgresql", "query": "customers"}, schema=CHURN_SCHEMA)
    dataset = Dataset.objects.get(pk=registered.json()["id"])
    _erase(DataRecord.objects.filter(dataset=dataset, external_key__in=["K0014", "K0015"]))

    # The company fills the erased person's address in on another customer's row ...
    company_database.execute("UPDATE customers SET email = 'Customer.007@Example.org' WHERE customer_no = 'K0016'")
    train = dataset_split(dataset, "train")
    assert "K0016" not in train.record_keys and train.source_read.suppressed == 1
    # ... and copies their data onto a third (a changed row, but what it holds now is suppressed).
    company_database.execute("UPDATE customers SET tenure_months = 16, monthly_spend = 35, support_calls = 0, "
                             "churned = 1 WHERE customer_no = 'K0017'")
    train = dataset_split(dataset, "train")
    assert not {"K0014", "K0015", "K0016", "K0017"} & set(train.record_keys)
    assert train.source_read.to_dict() == {"records": 13, "unregistered_rows": 0, "excluded_still_held": 1,
                                           "missing": 0, "suppressed": 2}


def _folder(directory, rows: list[tuple[str, str, dict | None, list[float]]]) -> None:
    """A dataset folder in the platform's layout: (key, split, subject, [target, features...])."""
    directory.mkdir(exist_ok=True)
    splits = {}
    for split in ("train", "test"):
        lines = ["record_key,target,f0,f1"] + [f"{k},{int(v[0])},{v[1]!r},{v[2]!r}" for k, s, _, v in rows if s == split]
        (directory / f"{split}.csv").write_text("\n".join(lines) + "\n")
        splits[split] = {"file": f"{split}.csv"}
    (directory / "records.jsonl").write_text("".join(
        json.dumps({"record_key": k, "split": s, "subject": subject, "canary": None}) + "\n" for k, s, subject, _ in rows))
    (directory / "dataset.json").write_text(json.dumps({"modality": "tabular", "splits": splits}))


def test_a_dataset_folder_that_comes_back_with_suppressed_records_is_read_without_them(tmp_path):
    from tests import factories
    from workers.data_sources import dataset_split
    from workers.datasets.reference import record_import_row, reference_records

    ann = {"email": "ann@example.org", "customer_id": "C-1"}
    rows = [("a", "train", ann, [1, 0.5, 1.5]), ("b", "train", {"email": "bob@example.org", "customer_id": "C-2"},
                                                 [0, 2.5, 3.5]), ("t", "test", None, [0, 9.0, 9.0])]
    folder = tmp_path / "crm"
    _folder(folder, rows)
    dataset = factories.dataset(name="crm", storage_location=str(folder))
    factories.import_records(dataset, [record_import_row(r) for r in reference_records(folder)])
    _erase(DataRecord.objects.filter(dataset=dataset, external_key="a"))

    # The folder is restored from a backup, with Ann under a new key and her record copied without a subject.
    _folder(folder, rows + [("a2", "train", {"email": "ANN@example.org", "customer_id": "C-9"}, [1, 7.0, 7.0]),
                            ("a3", "train", None, [1, 0.5, 1.5])])
    train = dataset_split(dataset, "train")
    assert list(train.record_keys) == ["b"]
    assert train.source_read.to_dict()["suppressed"] == 3
