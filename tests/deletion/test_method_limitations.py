"""The report states what a method's versions keep (the catalogue's report_limitation), e.g. that an
MRP version is its parent's weights with projections: the weights still hold the erased records."""

from types import SimpleNamespace

from deletion.report_data import method_limitations


def _outcome(method: str, *, new_version_id=7, model="support-bot"):
    return SimpleNamespace(method=method, new_version_id=new_version_id,
                           model_version=SimpleNamespace(model=SimpleNamespace(name=model)))


def test_an_mrp_version_is_said_to_keep_its_parents_weights_once_per_model():
    sentences = method_limitations([_outcome("mrp"), _outcome("mrp"), _outcome("mrp", model="faq-bot")])
    assert len(sentences) == 2
    assert "the new version of support-bot is its parent's weights" in sentences[0]
    assert "whoever holds the weights file without the projections still holds the data" in sentences[0]


def test_methods_that_change_the_weights_and_outcomes_without_a_version_add_nothing():
    assert method_limitations([_outcome("npo"), _outcome("finetune"), _outcome("mrp", new_version_id=None),
                               _outcome("external_retrain")]) == []
