"""The lineage client against the real platform (a live server over HTTP), as a company uses it in
its own training code (issue 21): a plain PyTorch loop on breast cancer whose loader is wrapped to
record membership, streamed in chunks across a dropped connection and a restart, then the weights;
and a transformers Trainer with the lineage callback on a tiny sequence classifier."""

from __future__ import annotations

import pytest
import torch

from foundation.access.authentication import api_token_create
from models_registry.models import MembershipUpload, ModelVersion, TrainingMembership
from tests.workers import hf_company
from workers.reference_data import reference_dataset_register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("one_torch_thread")]

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16]}}


def _client(live_server, **options):
    from lineage_client import PlatformClient

    return PlatformClient(live_server.url, api_token_create(name="company-pipeline", role="ml_engineer")[1],
                          backoff=0.01, **options)


def _held(run_id: int) -> dict[str, tuple[int, int, int]]:
    return {key: (shard, slice_, position) for key, shard, slice_, position in TrainingMembership.objects.filter(
        run_id=run_id).values_list("record__external_key", "shard", "slice", "position")}


class _Rows(torch.utils.data.Dataset):
    """The company's dataset: one dict per row, its record key among the columns."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        key, features, target = self.split[index]
        return {"record_key": key, "features": features, "target": target}


class _Faults:
    """Wraps a client's sending: the answer to chunk ``lost`` is lost once (the platform applied the
    chunk), chunk ``unreachable`` never reaches the platform."""

    def __init__(self, client, *, lost: int, unreachable: int | None = None):
        self.send, self.lost, self.unreachable = client._send, f"/chunks/{lost}/", f"/chunks/{unreachable}/"
        self.answer_lost = False
        client._send = self

    def __call__(self, request):
        if request.full_url.endswith(self.unreachable):
            raise ConnectionRefusedError("connection refused")
        answer = self.send(request)
        if request.full_url.endswith(self.lost) and not self.answer_lost:
            self.answer_lost = True
            raise ConnectionResetError("connection reset by peer")
        return answer


def test_a_company_training_loop_streams_its_membership_and_registers_its_weights(live_server):
    from lineage_client import ConnectionFailed, MembershipRecorder, PlatformError, RecordingLoader
    from safetensors.torch import save

    from workers.datasets.reference import load_reference_split
    from workers.training.architectures import build_model

    dataset = reference_dataset_register(name="breast_cancer")
    client = _client(live_server)
    client.register_model(name="bc-company", task="classification", training_recipe="plain", architecture=MLP,
                          unlearning_policy={"approximate_method": "finetune"})
    run = client.register_training_run(model="bc-company", recipe="plain", seed=5, code_version="pipeline 2.0",
                                       config={"epochs": 2, "lr": 0.01, "batch_size": 64, "seed": 5},
                                       datasets=[dataset.id])

    # The company's own loop; its loader wrapped once, so each pass is an epoch.
    split = load_reference_split(dataset.storage_location, "train")
    keys_used = split.record_keys[:300]
    torch.manual_seed(5)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(_Rows(split), range(300)), batch_size=64,
                                         shuffle=True)
    recorder = MembershipRecorder()
    recording = RecordingLoader(loader, recorder)
    model = build_model(MLP)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        for batch in recording:
            loss = torch.nn.functional.cross_entropy(model(batch["features"]), batch["target"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    rows = recorder.rows()
    assert sorted(r.record_key for r in rows) == sorted(keys_used) and recorder.yields == 600

    # First attempt: the answer to chunk 1 is lost (retried: applied once), then the platform cannot
    # be reached at chunk 4 and the process gives up, leaving the upload open.
    flaky = _client(live_server, retries=2)
    _Faults(flaky, lost=1, unreachable=4)
    with pytest.raises(ConnectionFailed, match="3 attempt"):
        flaky.upload_membership(run["id"], dataset.id, rows, chunk_rows=50)
    upload = MembershipUpload.objects.get(run_id=run["id"])
    assert client.membership_upload(upload.id)["chunks"] == [0, 1, 2, 3]
    assert list(upload.chunks.values_list("number", flat=True).order_by("number")) == [0, 1, 2, 3]
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    with pytest.raises(PlatformError) as refused:
        client.upload_weights("bc-company", run["id"], weights)
    assert refused.value.code == "membership_incomplete"

    # The restarted process resumes: the platform says which chunks it holds.
    resumed = _client(live_server)
    _Faults(resumed, lost=5)
    done = resumed.upload_membership(run["id"], dataset.id, rows, chunk_rows=50)
    assert done["status"] == "complete" and done["chunks"] == list(range(6)) and done["rows"] == 300
    assert _held(run["id"]) == {r.record_key: (r.shard, r.slice, r.position) for r in rows}

    version = client.upload_weights("bc-company", run["id"], weights)
    stored = ModelVersion.objects.get(pk=version["id"])
    assert stored.training_run_id == run["id"] and stored.model.name == "bc-company"


def test_the_trainer_callback_records_what_the_trainer_drew(live_server, tmp_path):
    from lineage_client import LineageCallback
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from workers.datasets.reference import load_reference_split

    dataset = reference_dataset_register(name="synthetic_pii_text")
    split = load_reference_split(dataset.storage_location, "train")
    keys = list(split.record_keys[:24])
    texts = [split.texts[i] for i in range(24)]
    labels = [split.labels[i] for i in range(24)]
    config, tokenizer = hf_company.bert_style()
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=48, return_tensors="pt")
    # The Trainer drops the record_key column (its model does not take it): the callback reads the
    # row index -> key mapping first.
    rows = [{"record_key": key, "input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "labels": labels[i]} for i, key in enumerate(keys)]
    callback = LineageCallback.from_dataset(rows)

    torch.manual_seed(7)
    model = AutoModelForSequenceClassification.from_config(config)
    arguments = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=12, num_train_epochs=1,
                                  learning_rate=2e-3, report_to=[], save_strategy="no", logging_strategy="no",
                                  use_cpu=True, disable_tqdm=True, seed=7)
    Trainer(model=model, args=arguments, train_dataset=rows, callbacks=[callback]).train()
    # Every row, in the order the Trainer's shuffling sampler drew them (not the dataset's).
    assert sorted(r.record_key for r in callback.membership) == sorted(keys)
    assert [r.position for r in callback.membership] == list(range(24))
    assert [r.record_key for r in callback.membership] != keys

    client = _client(live_server)
    client.register_model(name="support-router", task="classification", training_recipe="hf_sequence_classifier",
                          architecture={"name": "transformers", "config": {}},
                          unlearning_policy={"approximate_method": "finetune"})
    run = client.register_training_run(model="support-router", recipe="hf-trainer", seed=7,
                                       code_version="company-ml 3.2", datasets=[dataset.id],
                                       config={"epochs": 1, "lr": 2e-3, "batch_size": 12, "max_length": 48})
    client.upload_membership(run["id"], dataset.id, callback.membership, chunk_rows=10)
    archive = hf_company.zip_archive(hf_company.saved_folder(model.eval(), tokenizer))
    version = client.upload_weights("support-router", run["id"], archive, content_type="application/zip")
    assert ModelVersion.objects.get(pk=version["id"]).training_run_id == run["id"]
    assert set(_held(run["id"])) == set(keys)


def test_a_dataset_registered_and_imported_through_the_client(live_server):
    from lineage_client import PlatformError

    client = _client(live_server)
    dataset = client.register_dataset(
        name="exams", version="1", modality="tabular", purpose="Diagnosis support", legal_basis="consent",
        source={"kind": "csv"}, record_schema={"record_key": "record_id", "subjects": {"patient_email": "email"},
                                               "features": ["f0", "f1"], "label": "diagnosis", "split": "split"})
    rows = "record_id,patient_email,f0,f1,diagnosis,split\n" + "".join(
        f"r{i},p{i % 2}@example.org,{i}.5,{i},{i % 2},train\n" for i in range(4))
    with pytest.raises(PlatformError) as refused:  # a feature that is not a number: the row and the column
        client.import_dataset_file(dataset["id"], rows.replace("r3,p1@example.org,3.5", "r3,p1@example.org,x").encode())
    assert refused.value.status == 400 and "f0" in refused.value.message, refused.value
    assert client.import_dataset_file(dataset["id"], rows.encode())["rows"] == 4
