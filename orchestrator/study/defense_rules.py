"""Study validation of defenses that need trained artifacts (a defense class's ``requires``),
and of the ``models:`` a defense entry wraps.

A defense such as ``autoencoder_purify`` cannot be built from its params alone: its class
declares the artifacts it needs by role, each a :class:`~tasks.defenses.Requirement` with the
recipe that makes it, and takes them as keywords of its constructor. The planner
(:mod:`orchestrator.study.plan`) adds the train cell a recipe describes; a defense entry that
requires an artifact without a recipe is refused here, before anything is written, rather
than failing in every cell that would build it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.study.problems import Problems
from orchestrator.study.schema import ModelEntry, Resolved, Study
from tasks.attacks import ATTACKS
from tasks.defenses import DEFENSES, Requirement


def requires(name: str) -> Mapping[str, Requirement]:
    """The trained artifacts the defense ``name`` declares it needs, by role (none for most)."""
    return getattr(DEFENSES.get(name).obj, "requires", {})


def check(defenses: list[tuple[int, Resolved]], models: list[str], problems: Problems) -> None:
    """Refuse each defense entry that needs an artifact without a recipe (no cell can produce
    it), or whose producing cell would show under the name of one of the study's ``models``.

    Args:
        defenses: ``(entry index, resolved defense)`` for every valid defense entry.
        models: the names of the study's model entries.
        problems: Where errors go (with the entry's line and path).
    """
    for i, d in defenses:
        needs = requires(d.name)
        for name in [r.model for r in needs.values() if r.model in models]:
            problems.add(
                ("models", models.index(name), "name"),
                f"the model name {name!r} is the one {d.name} (defenses[{i}]) gives its "
                "trained part in results; rename the model",
            )
        missing = [role for role, r in needs.items() if r.recipe is None]
        if missing:
            roles = ", ".join(repr(r) for r in missing)
            problems.add(
                ("defenses", i, "name"),
                f"{d.name} needs a trained artifact ({roles}) that studies cannot produce yet: "
                "no cell of the plan trains it; remove this defense from the study, or "
                "evaluate it outside advgrid (see its module's docstring)",
            )


def take_models(values: dict, loc: tuple, problems: Problems) -> tuple[str, ...] | None:
    """Remove ``models:`` from a defense entry's ``values``: the names of the models the
    defense wraps (a split entry's name meaning all its parts), or None for all of them.
    It selects cells, like ``sources:``; it is not a defense parameter and no key holds it."""
    if "models" not in values:
        return None
    given: Any = values.pop("models")
    if not isinstance(given, list) or not given or not all(isinstance(n, str) for n in given):
        problems.add(
            loc + ("models",),
            f"models must be a non-empty list of model names, e.g. [cnn]; got {given!r}",
        )
        return None
    return tuple(dict.fromkeys(given))


def check_models(
    defenses: list[tuple[int, Resolved]], models: Sequence[ModelEntry], problems: Problems
) -> None:
    """Refuse a defense entry's ``models:`` naming a model the study does not have."""
    known = list(dict.fromkeys(n for m in models for n in [m.name, *m.part_names()]))
    for i, d in dict(defenses).items():
        for j, name in enumerate(d.models or ()):
            if name not in known:
                problems.add(
                    ("defenses", i, "models", j),
                    f"unknown model {name!r}; the study's models are {', '.join(known)}",
                )


def wraps(study: Study, defense: Resolved, model: str) -> bool:
    """Whether ``defense`` wraps the model (or split part) ``model`` in ``study``."""
    if defense.models is None:
        return True
    groups = {m.name: m.part_names() for m in study.file.models}
    return any(model == name or model in groups.get(name, ()) for name in defense.models)


def attacks_generator(attack: str) -> bool:
    """Whether the registered attack ``attack`` attacks a generator (``vae_latent``,
    ``vae_output``, ``on_range``): its cells are made only on defenses that have one."""
    return bool(getattr(ATTACKS.get(attack).obj, "needs_generator", False))


def _needs_encoder(attack: str) -> bool:
    """Whether an attack on a generator moves its encoder's output (``vae_latent``, not
    ``on_range``, which decodes prior draws)."""
    return bool(getattr(ATTACKS.get(attack).obj, "needs_encoder", True))


def has_generator(defense: str, *, encoding: bool = True) -> bool:
    """Whether the defense ``defense`` purifies with a generator (role ``vae``); with
    ``encoding``, one that encodes its input (not ``latent_projection``, whose search never
    runs the encoder that the latent and output attacks move)."""
    cls = DEFENSES.get(defense).obj
    if "vae" not in requires(defense):
        return False
    return not encoding or getattr(cls, "encodes_input", True)


def applies(defense: Resolved, attack: Resolved) -> bool:
    """Whether the study makes cells of ``attack`` on models behind ``defense``."""
    if not attacks_generator(attack.name):
        return True
    return has_generator(defense.name, encoding=_needs_encoder(attack.name))


def check_generator_attacks(
    defenses: list[tuple[int, Resolved]], attacks: list[tuple[int, str]], problems: Problems
) -> None:
    """Refuse an attack on generators in a study without a purifier it applies to: it
    would make no cell at all."""
    for j, name in attacks:
        if not attacks_generator(name):
            continue
        encoding = _needs_encoder(name)
        if any(has_generator(d.name, encoding=encoding) for _, d in defenses):
            continue
        which = (
            "one that encodes its input: add a generative purifier (vae_purify or mlvgm_purify)"
            if encoding
            else "a generator: add a generative purifier (latent_projection, vae_purify or "
            "mlvgm_purify)"
        )
        problems.add(
            ("attacks", j),
            f"{name} attacks a generator, and no defense of this study has {which} to "
            "`defenses:`; its cells are made on the models behind those only",
        )
