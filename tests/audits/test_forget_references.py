"""The pure parts of audits/forget_references.py: which forget sets are a class or sub-population,
the representation read off a model's last linear layer (of each member of an ensemble), the
relearning grid, and the two checks saying why they do not apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audits.checks.relearning import relearning
from audits.checks.representation import representation_retention
from audits.checks.result import Verdict
from audits.forget_references import (
    RELEARNING_BUDGETS,
    forget_population,
    penultimate_features,
    relearning_recovery,
)
from workers.training.architectures import build_model

MEMBERS = np.repeat(np.arange(10), 100)  # ten labels, a hundred training records each


def test_a_whole_label_is_a_class_and_a_part_of_it_a_sub_population():
    whole = forget_population(forget_labels=[3] * 100, member_labels=MEMBERS)
    assert (whole.kind, whole.label, whole.share) == ("class", 3, 1.0)
    part = forget_population(forget_labels=[3] * 20, member_labels=MEMBERS)
    assert (part.kind, part.label, part.share) == ("sub_population", 3, 0.2)
    assert "a sub-population of the class" in part.statement


@pytest.mark.parametrize("labels, why", [
    (list(range(10)) * 4, "random records, not a class or sub-population"),
    ([3] * 9 + [4], "random records, not a class or sub-population"),  # not all of one label
    ([3] * 5, "fewer than 10 records"),
])
def test_random_or_too_few_records_are_not_a_class(labels, why):
    population = forget_population(forget_labels=labels, member_labels=MEMBERS)
    assert population.kind == "records" and population.label is None
    assert why in population.statement


def test_a_declared_sub_population_needs_most_records_to_share_a_label():
    labels = [3] * 19 + [4]
    assert forget_population(forget_labels=labels, member_labels=MEMBERS).kind == "records"
    declared = forget_population(forget_labels=labels, member_labels=MEMBERS, declared="sub_population")
    assert (declared.kind, declared.label) == ("sub_population", 3)
    mixed = forget_population(forget_labels=[3, 4] * 10, member_labels=MEMBERS, declared="class")
    assert mixed.kind == "records" and "fewer than 90% share one label" in mixed.statement
    with pytest.raises(ValueError, match="population"):
        forget_population(forget_labels=labels, member_labels=MEMBERS, declared="writers")


def _batches(n: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(0))
    return [(x[:7], torch.zeros(7, dtype=torch.long)), (x[7:], torch.zeros(n - 7, dtype=torch.long))]


def test_the_representation_is_the_input_of_the_last_linear_layer():
    torch.manual_seed(0)
    # A hidden layer as wide as the logits is not mistaken for the head.
    net = build_model({"name": "mlp", "config": {"in_features": 8, "num_classes": 10, "hidden": [16, 10],
                                                 "input_norm": "none"}}).eval()
    batches = _batches(12, 8)
    features = penultimate_features(net, batches, device="cpu")
    with torch.no_grad():
        expected = net[:-1](torch.cat([x for x, _ in batches])).numpy()
    assert features.shape == (12, 10)
    np.testing.assert_allclose(features, expected, rtol=1e-6)


class _Ensemble(nn.Module):
    def __init__(self):
        super().__init__()
        self.members = nn.ModuleList(
            build_model({"name": "mlp", "config": {"in_features": 8, "num_classes": 3, "hidden": [5],
                                                   "input_norm": "none"}}) for _ in range(2))

    def forward(self, x):
        return torch.stack([m(x).softmax(-1) for m in self.members]).mean(0).log()


def test_an_ensembles_representation_joins_each_members():
    torch.manual_seed(0)
    ensemble = _Ensemble().eval()
    batches = _batches(10, 8)
    features = penultimate_features(ensemble, batches, device="cpu")
    with torch.no_grad():
        x = torch.cat([x for x, _ in batches])
        expected = torch.cat([m[:-1](x) for m in ensemble.members], dim=1).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-6)


def test_relearning_fine_tunes_a_copy_at_each_budget():
    torch.manual_seed(0)
    net = build_model({"name": "mlp", "config": {"in_features": 8, "num_classes": 3, "hidden": [5],
                                                 "input_norm": "none"}}).eval()
    before = [p.detach().clone() for p in net.parameters()]
    batches = _batches(10, 8)
    recovered = relearning_recovery(net, batches[0], batches, device="cpu")
    assert list(recovered) == [name for name, _, _ in RELEARNING_BUDGETS]
    assert all(0.0 <= v <= 1.0 for v in recovered.values())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))  # the model is untouched


def test_both_checks_say_why_they_do_not_apply():
    why = "Not a class or sub-population: random records."
    result = representation_retention(original=np.zeros((0, 1)), unlearned=np.zeros((0, 1)), references=(),
                                      controls=(), not_applicable=why)
    assert (result.verdict, result.reason) == (Verdict.NOT_APPLICABLE, why)
    result = relearning(unlearned={}, references=[], not_applicable=why)
    assert (result.verdict, result.reason) == (Verdict.NOT_APPLICABLE, why)


def test_the_report_states_the_figures_in_plain_words(tmp_path):
    from audits.forget_references import STORAGE, forget_references_report
    from tests.audits.conftest import rendered_text
    from tests.audits.report_factory import build_report

    rng = np.random.default_rng(0)
    kept = np.eye(12)[:, :6]
    representation = representation_retention(
        original=kept, unlearned=kept, references=[rng.normal(size=(12, 6)) for _ in range(2)],
        controls=[kept + rng.normal(0, 0.3, (12, 6)) for _ in range(2)])
    budgets = [name for name, _, _ in RELEARNING_BUDGETS]
    recovered = relearning(unlearned=dict(zip(budgets, (0.6, 0.9, 0.95), strict=True)),
                           references=[dict(zip(budgets, (0.0, 0.02, 0.1), strict=True))] * 2)
    audit = {"checks": [representation.to_dict(), recovered.to_dict()], "forget_references": {
        "applies": True, "population": {"statement": "the 398 forgotten records are 398 of label 3: the class"},
        "references": 2, "reference_recipe": "the model's own plain recipe with the run's configuration",
        "retain_records": 3600, "controls": 2, "control_budget": "finetune: 5 epoch(s) at lr 0.001 (adam), all layers",
        "storage": STORAGE, "seconds": {"total": 41.2},
        "representation": {"layer": "the input of the model's last linear layer", "forgotten_records": 398},
        "relearning": {"examples": 5, "examples_from": "held-out records of label 3",
                       "before": {"unlearned": 0.0, "references": [0.0, 0.0]}}}}
    words = forget_references_report(audit)
    assert words["statement"].startswith("What was erased: the 398 forgotten records are 398 of label 3")
    assert "Representation (the input of the model's last linear layer, on 398 erased records): FAIL." in words["findings"][0]
    assert "after 10 steps at lr 0.001: the new model 0.6, models retrained without them 0, 0 (margin 0.05)" \
        in words["findings"][1]
    report = build_report()
    report["model_versions"][0]["forget_references"] = words
    text = rendered_text(report, tmp_path / "forget_references.pdf")
    assert "Representation and relearning" in text
    assert "retrained 2 model(s) without them" in text
