"""Out-of-domain evaluation: a dataset entry with ``models_from: <label>`` trains nothing;
every model of the named dataset (with its defenses, their trained parts, and the input
statistics it was trained with) is attacked and targeted on this dataset's evaluation slice.
It answers the generalization half of a training defense's claim (GAT's, say): the same
classes drawn from another source, such as MNIST models on USPS digits, CIFAR-10 models on
CIFAR-10.1, or a recipe trained on clean images met with a noisier capture.

The rules, checked once every dataset is described: the label names another dataset of the
study that is itself trained on; both give images of the same shape and the same number of
classes; no model entry lists the out-of-domain dataset in ``datasets:`` (nothing trains
there)."""

from __future__ import annotations

import difflib

from orchestrator.study.problems import Problems
from orchestrator.study.schema import Component, Study

KEY = "models_from"


def take(entry: Component, loc: tuple, problems: Problems) -> tuple[Component, str | None]:
    """``entry`` without its ``models_from:`` key, and that key's value (None: absent)."""
    values = entry.values
    if KEY not in values:
        return entry, None
    home = values.pop(KEY)
    if not isinstance(home, str) or not home:
        problems.add(
            loc + (KEY,),
            f"expected the label of another dataset of this study (got {home!r}), such as "
            f"`{KEY}: digits`",
        )
        home = None
    return Component.model_validate({"name": entry.name, **values}), home


def check(study: Study, problems: Problems) -> None:
    """Refuse a ``models_from:`` that names no trained-on dataset, or one whose images or
    classes differ from this dataset's, and a model entry that would train on it."""
    labels = [d.label for d in study.datasets]
    homes = {d.label for d in study.home_datasets()}
    positions = _entry_positions(study)
    for d in study.datasets:
        if d.models_from is None:
            continue
        loc = ("datasets", positions[d.label], KEY)
        if d.models_from == d.label:
            problems.add(loc, f"dataset {d.label!r} cannot evaluate its own models out of domain")
            continue
        if d.models_from not in labels:
            close = difflib.get_close_matches(d.models_from, labels, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.add(
                loc, f"unknown dataset {d.models_from!r}; {hint}the datasets: {', '.join(labels)}"
            )
            continue
        if d.models_from not in homes:
            problems.add(
                loc,
                f"dataset {d.models_from!r} is itself evaluated out of domain (it has "
                f"`{KEY}:`): name the dataset its models are trained on",
            )
            continue
        mine, theirs = study.data_info.get(d.label), study.data_info.get(d.models_from)
        if mine is None or theirs is None:  # not described: its own problem is reported
            continue
        if tuple(mine.input_shape) != tuple(theirs.input_shape):
            problems.add(
                loc,
                f"dataset {d.label!r} has images of shape {tuple(mine.input_shape)}, but the "
                f"models of {d.models_from!r} take {tuple(theirs.input_shape)}: out-of-domain "
                "data must have the same shape (resize or crop it to match)",
            )
        if mine.num_classes != theirs.num_classes:
            problems.add(
                loc,
                f"dataset {d.label!r} has {mine.num_classes} classes, but the models of "
                f"{d.models_from!r} predict {theirs.num_classes}: out-of-domain data must "
                "share the label set",
            )
    for i, m in enumerate(study.file.models):
        for j, label in enumerate(m.datasets or []):
            if label in labels and label not in homes:
                home = next(d.models_from for d in study.datasets if d.label == label)
                problems.add(
                    ("models", i, "datasets", j),
                    f"nothing trains on {label!r}, which evaluates the models of {home!r} out "
                    f"of domain (`{KEY}:`); list {home!r} here and the model is evaluated on "
                    "both",
                )


def _entry_positions(study: Study) -> dict[str, int]:
    """Each dataset label's index among the study file's ``datasets:`` entries."""
    out: dict[str, int] = {}
    for i, entry in enumerate(study.file.datasets):
        out.setdefault(str(entry.values.get("label", entry.name)), i)
    return out
