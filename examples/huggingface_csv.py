"""A Hugging Face sequence classifier the company builds from a tiny config and trains with the
transformers Trainer on support tickets from a CSV file, the lineage callback recording which tickets
the Trainer drew; then one customer asks to be erased.

    pip install ./client
    python examples/huggingface_csv.py --url http://127.0.0.1:8000 --csv tickets.csv \\
        --engineer-token "$ENGINEER" --dpo-token "$DPO" --second-dpo-token "$DPO2"

(``$DPO`` and ``$DPO2``: tokens bound to two different DPO users, ``create_api_token --user``: the
fine-tuned result's residual risk is accepted by two people, which two tokens of one person are not.)

The data: synthetic support tickets (billing or delivery) written by synthetic customers, their
e-mail addresses and customer numbers in the text, written to ``--csv``. The model: a two-layer
BERT-style classifier from a config, with a WordPiece tokenizer trained on the tickets (nothing is
downloaded), uploaded as the zip of its ``save_pretrained`` folder.

Policy: approximate. The platform fine-tunes the model on the kept tickets (``finetune``): the weights
change, but nothing proves that the person's tickets left no trace. With ``--small`` no shadow models
are trained, so the audit has no per-record membership test and cannot confirm erasure: INCONCLUSIVE
(never PASS). The request waits for the DPO; two DPO users accept the residual risk in writing (the
model is retrained from scratch at its next scheduled release), and the request ends
CLOSED_RISK_ACCEPTED: the report says erasure was NOT confirmed for this model, who accepted that, and
why. At full size (16 shadow models) the audit may PASS (then COMPLETED), stay INCONCLUSIVE (risk
accepted), or FAIL (the DPO escalates to the platform's exact retrain).
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import tempfile
import zipfile
from pathlib import Path

import erasure
from erasure import say

FIRST = ["amara", "bruno", "chen", "dana", "emil", "fatima", "goran", "hana", "ivan", "julia", "kofi", "lea"]
LAST = ["adler", "brandt", "cruz", "dumas", "engel", "friis", "gomez", "holm", "ivanova", "jung", "klein"]
TOPICS = {  # label -> ticket templates
    0: ["I was charged twice for invoice {number}, please refund one payment. Customer {customer}, {email}.",
        "My card was billed {amount} EUR although my plan costs less. Please check account {customer}.",
        "Please send invoice {number} again with my company address. Thanks, {name} ({email})",
        "The direct debit for {amount} EUR failed, can I pay by bank transfer? {name}, customer {customer}"],
    1: ["Parcel {number} has not arrived after {days} days. {name}, {email}, customer {customer}.",
        "The courier left order {number} at the wrong door. Please call me, {name} ({email}).",
        "Delivery of order {number} is {days} days late, can you tell me where it is? Customer {customer}",
        "The box for order {number} arrived damaged and the lamp is broken. {name}, {email}"],
}
RISK_REASON = ("finetune is approximate and its audit could not confirm that this customer's tickets were "
               "forgotten (no per-record membership test with demonstrated power; see the verdict's reasons). The "
               "router is retrained from scratch without these tickets at its scheduled monthly release; the "
               "residual risk is accepted until then.")


def support_tickets(count: int, tag: str) -> list[dict]:
    """Tickets of synthetic customers, two or three each; a fifth of the customers are held out."""
    rng = random.Random(11)
    tickets, person = [], 0
    while len(tickets) < count:
        name = f"{FIRST[person % len(FIRST)].title()} {LAST[person % len(LAST)].title()}"
        email = f"{FIRST[person % len(FIRST)]}.{LAST[person % len(LAST)]}.{person}@mail-{tag}.example.org"
        customer = f"CU-{tag}-{person:04d}"
        for _ in range(2 + person % 2):
            topic = rng.randrange(2)
            body = rng.choice(TOPICS[topic]).format(number=rng.randint(10000, 99999), customer=customer, email=email,
                                                    name=name, amount=rng.randint(9, 99), days=rng.randint(3, 20))
            tickets.append({"ticket_id": f"T{len(tickets):05d}", "email": email, "customer_no": customer, "body": body,
                            "topic": topic, "split": "test" if person % 5 == 4 else "train"})
        person += 1
    return tickets[:count]


def wordpiece_tokenizer(texts: list[str], vocab_size: int):
    """A BERT-style tokenizer trained on the company's own texts ([CLS] text [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", backend.token_to_id("[CLS]")),
                                                 ("[SEP]", backend.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def saved_folder_zip(model, tokenizer) -> bytes:
    """The zip of the folder ``save_pretrained`` writes for the model and its tokenizer."""
    out = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for path in sorted(Path(folder).iterdir()):
            archive.write(path, path.name)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    import torch
    from lineage_client import LineageCallback, PlatformClient
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        Trainer,
        TrainingArguments,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    erasure.platform_arguments(parser, second_dpo=True)
    parser.add_argument("--csv", type=Path, default=Path("tickets.csv"), help="where the tickets file is written")
    args = parser.parse_args(argv)
    erasure.required_tokens(parser, args)
    run_config = {"epochs": 8, "lr": 5e-3, "batch_size": 16, "max_length": 48}

    say("== The support desk's tickets, exported to CSV")
    tickets = support_tickets(80 if args.small else 1200, args.tag)
    with args.csv.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(tickets[0]))
        writer.writeheader()
        writer.writerows(tickets)
    say(f"  {args.csv}: {len(tickets)} tickets of {len({t['email'] for t in tickets})} customers")

    say("== On the platform (ml_engineer): the dataset, imported from the file")
    engineer = PlatformClient(args.url, args.engineer_token)
    dataset = engineer.register_dataset(
        name=f"tickets-{args.tag}", version="1", modality="text", purpose="Routing support tickets",
        legal_basis="legitimate_interests", source={"kind": "csv"},
        record_schema={"record_key": "ticket_id", "subjects": {"email": "email", "customer_no": "customer_id"},
                       "text": "body", "label": "topic", "split": "split"})
    imported = engineer.import_dataset_file(dataset["id"], args.csv)
    say(f"  dataset {dataset['id']}: {imported.get('rows')} records")

    say("== The company's model: a tiny BERT-style config, its own tokenizer, the transformers Trainer")
    with args.csv.open(newline="") as source:
        train = [row for row in csv.DictReader(source) if row["split"] == "train"]
    tokenizer = wordpiece_tokenizer([row["body"] for row in train], vocab_size=400)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        pad_token_id=tokenizer.pad_token_id, id2label={0: "billing", 1: "delivery"},
                        label2id={"billing": 0, "delivery": 1})
    torch.manual_seed(7)
    model = AutoModelForSequenceClassification.from_config(config)
    encoded = tokenizer([row["body"] for row in train], padding="max_length", truncation=True,
                        max_length=run_config["max_length"], return_tensors="pt")
    rows = [{"record_key": row["ticket_id"], "input_ids": encoded["input_ids"][i],
             "attention_mask": encoded["attention_mask"][i], "labels": int(row["topic"])}
            for i, row in enumerate(train)]
    lineage = LineageCallback.from_dataset(rows)  # reads the keys before the Trainer drops that column
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=run_config["batch_size"],
                                      num_train_epochs=run_config["epochs"], learning_rate=run_config["lr"], seed=7,
                                      report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                                      disable_tqdm=True)
        result = Trainer(model=model, args=arguments, train_dataset=rows, callbacks=[lineage]).train()
    say(f"  trained on {len(lineage.membership)} tickets, loss {result.training_loss:.3f}")

    say("== Model, run, lineage and the save_pretrained folder to the platform")
    name = f"ticket-router-{args.tag}"
    engineer.register_model(name=name, task="classification", training_recipe="hf_sequence_classifier",
                            architecture={"name": "transformers", "config": {}},
                            unlearning_policy={"approximate_method": "finetune"})
    run = engineer.register_training_run(model=name, recipe="hf-trainer", seed=7, code_version="support-ml 3.2",
                                         config=run_config, datasets=[dataset["id"]])
    engineer.upload_membership(run["id"], dataset["id"], lineage.membership)
    version = engineer.upload_weights(name, run["id"], saved_folder_zip(model.eval(), tokenizer),
                                      content_type="application/zip")
    say(f"  {name} v{version['version']} registered (run {run['id']})")
    if args.small:  # two shadow models would test a record against at most two that never saw it: no power either
        say("  no shadow models (--small): the audit has no reference to test the tickets against")
    else:
        shadows = engineer.request("POST", "/api/v1/shadow-jobs/", json_body={
            "model": name, "version": version["version"], "count": 16})
        erasure.job_done(engineer, shadows)
        say(f"  {shadows['count']} shadow models trained for the audits")

    say("== A customer asks to be erased")
    person = next(t for t in tickets if t["split"] == "train")
    desk = erasure.ErasureDesk(args.url, dpo_token=args.dpo_token, serving_token=args.engineer_token,
                               second_dpo_token=args.second_dpo_token)
    ending = erasure.take_to_the_end(desk, {"email": person["email"], "customer_id": person["customer_no"]},
                                     out=args.out, risk_reason=RISK_REASON)
    return erasure.conclude(ending)


if __name__ == "__main__":
    sys.exit(main())
