"""Trained artifacts a defense needs, and the recipes that make them in a study.

A defense such as ``autoencoder_purify`` cannot be built from its params alone: it takes a
trained network (an autoencoder) as a keyword of its constructor. Its class declares that
need with the recipe that meets it::

    requires = {"autoencoder": Requirement(model="autoencoder", recipe=AutoencoderRecipe())}

The key is the *role*: the constructor's keyword, and the name of the cell input that
carries the artifact. The :class:`Requirement` gives the planner the train cell that
produces the artifact (:meth:`Requirement.train_spec`) and a worker the fit that runs in that
cell (:meth:`Requirement.fit`); the cell stores the result like a classifier's checkpoint,
so it is loaded like one. A requirement without a recipe is one that studies cannot meet:
validation refuses a defense that declares it.

Most artifacts depend on the dataset alone (one per dataset and recipe). One that is fit
*for the classifier it defends* (``per_model``: ``mlvgm_purify``'s learned α schedule) gets
a train cell per wrapped model, whose inputs are that model's checkpoint (role
``checkpoint``) and the defense's other artifacts; its fit receives them. A requirement with
``when`` is needed only for the params it accepts (the α search only for ``alpha: learned``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tasks.datasets import Data, Split
from tasks.errors import TaskError


class Recipe:
    """How a study makes a defense's artifact: what its train cell records, and the fit.

    Subclasses write the three methods; ``params`` is the defense's params as the study
    resolved them (a JSON mapping, defaults filled in).
    """

    def architecture(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The registered architecture of the artifact and its params as JSON: what its
        checkpoint records, so that it is rebuilt like a model (:mod:`tasks.models`)."""
        raise NotImplementedError

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The recipe as JSON: everything that changes the artifact (it enters the key)."""
        raise NotImplementedError

    def fit(
        self, values: Mapping[str, Any], data: Data, split: Split, device: torch.device
    ) -> tuple[nn.Module, dict[str, float]]:
        """Build and train the artifact on ``device`` from :meth:`values`, on the dataset's
        training part; return it (its state dict is what the cell stores) and its metrics."""
        raise NotImplementedError

    def checkpoint(self, params: Mapping[str, Any]) -> str | None:
        """The file the study names for the artifact instead of a recipe to train it
        (``sha256:<hex>`` once the study is loaded: it enters keys as its content); None
        (the default): the artifact is trained by a cell of the study."""
        return None

    def fit_for(
        self,
        values: Mapping[str, Any],
        data: Data,
        split: Split,
        device: torch.device,
        artifacts: Mapping[str, nn.Module],
    ) -> tuple[nn.Module, dict[str, float]]:
        """:meth:`fit` for a per-model requirement: ``artifacts`` holds the classifier
        (``checkpoint``) and the defense's other artifacts by role. The default ignores
        them."""
        return self.fit(values, data, split, device)


@dataclass(frozen=True)
class Requirement:
    """A trained artifact a defense's constructor takes, and the recipe that makes it.

    Attributes:
        model: The model name the cell that trains it shows under in results rows and
            checkpoint listings; a study model of that name is refused.
        recipe: How the planner specs that cell and a worker fits it; None where no study
            can produce the artifact (validation then refuses the defense).
        owner: The defense the train cell says it is trained for, when several defenses
            share one artifact (``vae_purify`` and ``mlvgm_purify`` share their generator:
            both name ``mlvgm_purify``, so one recipe is one cell); None: the defense that
            asks. The owner must declare the same role with the same recipe.
        per_model: The artifact is fit for the classifier the defense wraps (one train cell
            per model; its fit gets the classifier and the defense's other artifacts).
        when: Whether defense params (JSON) need the artifact at all; None: always.
    """

    model: str
    recipe: Recipe | None = None
    owner: str | None = None
    per_model: bool = False
    when: Callable[[Mapping[str, Any]], bool] | None = None

    def needed(self, params: Mapping[str, Any]) -> bool:
        """Whether a defense with ``params`` (JSON, as the study resolved them) needs it."""
        return self.when is None or self.when(params)

    def checkpoint(self, params: Mapping[str, Any]) -> str | None:
        """:meth:`Recipe.checkpoint`: the file that stands in for the trained artifact."""
        return None if self.recipe is None else self.recipe.checkpoint(params)

    def train_spec(
        self,
        role: str,
        dataset: dict[str, Any],
        defense: str,
        params: Mapping[str, Any],
        for_model: str | None = None,
    ) -> dict[str, Any]:
        """The spec of the train cell that makes this artifact for ``defense`` (its name)
        with ``params`` on ``dataset`` (the cell spec's dataset component); for a per-model
        requirement, ``for_model`` names the classifier it is fit for.

        ``role`` holds the recipe (the defense's params, labels aside, so two entries with
        one recipe share the cell); ``model`` and ``train`` say what results rows and
        checkpoint listings show for it: :attr:`model`, trained for the defense.
        """
        recipe = self._recipe()
        arch, arch_params = recipe.architecture(params)
        spec: dict[str, Any] = {
            "kind": "train",
            "dataset": dataset,
            "model": {"name": self.model, "arch": arch, "params": arch_params},
            "train": {"defense": {"name": self.owner or defense}},
            role: recipe.values(params),
        }
        if self.per_model:
            if for_model is None:
                raise TaskError(f"the artifact {self.model!r} is fit per model: name the model")
            spec["for_model"] = for_model
        return spec

    def fit(
        self,
        values: Mapping[str, Any],
        data: Data,
        split: Split,
        device: torch.device,
        artifacts: Mapping[str, nn.Module] | None = None,
    ) -> tuple[nn.Module, dict[str, float]]:
        """:meth:`Recipe.fit`: the trained artifact and its metrics."""
        recipe = self._recipe()
        if self.per_model:
            return recipe.fit_for(values, data, split, device, artifacts or {})
        return recipe.fit(values, data, split, device)

    def _recipe(self) -> Recipe:
        if self.recipe is None:
            raise TaskError(
                f"no recipe makes the trained artifact {self.model!r}: a study cannot train "
                "it (validation refuses a defense that needs it)"
            )
        return self.recipe
