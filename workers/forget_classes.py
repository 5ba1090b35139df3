"""Whether a forget set is one whole class of a model version's training data, for the methods that
forget whole classes only (MethodSpec.whole_class_only): the planner asks before it plans or offers
one, so that a request for one person's records is refused when it is planned, not when the job runs.

The labels live in the dataset (the registry keeps none), so this reads the training split's
targets through the dataset adapter, which imports torch: it runs only when such a method is
considered, never at import time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from models_registry.models import DataRecord, ModelVersion
from models_registry.selectors import current_source, dataset_canaries, version_membership


def whole_class_problem_of(*, labels: Mapping[str, int], member_keys: Iterable[str],
                           forget_keys: Iterable[str]) -> str | None:
    """Why ``forget_keys`` are not every member of one class (``labels``: record key -> class,
    for at least the members), in words for the plan; None when they are. Pure: no data read."""
    members, forget = set(member_keys), set(forget_keys) & set(member_keys)
    if not forget:
        return "none of the records to forget is in the model's training data"
    classes = Counter(labels[key] for key in forget)
    if len(classes) > 1:
        shown = ", ".join(f"class {c}: {n}" for c, n in sorted(classes.items()))
        return f"the {len(forget)} record(s) to forget belong to {len(classes)} classes ({shown}), not one"
    [(label, count)] = classes.items()
    whole = sum(1 for key in members if labels[key] == label)
    if count != whole:
        return (f"the {count} record(s) to forget are {count} of the {whole} training records of class {label}, "
                f"not all of them")
    return None


def whole_class_problem(*, version: ModelVersion, record_ids: Iterable[int]) -> str | None:
    """Why the records ``record_ids`` are not every training record of one class of ``version``
    (the version a job would unlearn from, ``current_source``), None when they are. Reads the
    training split's labels (a worker's read: torch is imported here)."""
    from workers.data_sources import dataset_split

    source = current_source(version)
    if source.training_run_id is None:
        return f"{source} has no recorded training run, so its classes are not known"
    datasets = list(source.training_run.datasets.all())
    # Canaries the platform planted in training are no class's records a request could name.
    planted = {row.record.external_key for dataset in datasets for row in dataset_canaries(dataset_id=dataset.id)}
    member_keys = [row[0] for row in version_membership(version=source) if row[0] not in planted]
    forget_keys = list(DataRecord.objects.filter(id__in=list(record_ids)).values_list("external_key", flat=True))
    wanted = set(member_keys)
    labels = {}
    try:
        for dataset in datasets:
            train = dataset_split(dataset, "train")
            keys = [key for key in train.record_keys if key in wanted]
            labels.update({key: int(target) for key, _, target in train.subset(keys)})
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # a source that cannot be read now
        return f"the classes of {source}'s training records could not be read ({exc})"
    missing = wanted - labels.keys()
    if missing:
        return f"{len(missing)} training record(s) of {source} are not in its dataset's training split"
    return whole_class_problem_of(labels=labels, member_keys=member_keys, forget_keys=forget_keys)
