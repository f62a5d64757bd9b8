"""Typed settings bundles, one per recipe: what `tinylm pretrain` / `finetune` (and every caller of them:
the paper wing, benchmarks, tests) hand to a recipe.

A bundle holds one typed section per concern (model, train, corpus or task, run) and the keys the user
set (`explicit`), so a recipe can tell a chosen value from a default (a fine-tuning's model flags must
agree with its `--init` source only where they were given). Built from layers of flat settings — a
YAML file, command-line flags, a grid job's settings — with every problem reported at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from tinylm.config import (
    CorpusConfig,
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
    args_layers,
    build_sections,
)
from tinylm.registry import NAMED_MODELS


class Settings:
    """The shared behaviour of a recipe's bundle (subclasses are frozen dataclasses of sections)."""

    KIND: ClassVar[str]
    train: TrainConfig
    run: RunConfig
    explicit: frozenset[str]

    @classmethod
    def sections(cls) -> dict[str, type[Any]]:
        """Section name -> section class, in declaration order (the order of config.yaml's keys)."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != "explicit"}  # type: ignore[arg-type]

    @classmethod
    def build(cls, *layers: Mapping[str, Any], source: str = "config") -> Self:
        """Merge layers of flat settings (later wins), coerce and validate every section at once."""
        built = build_sections(cls.sections(), *layers, source=source)
        make: Callable[..., Self] = cls  # a dataclass of these sections
        return make(**built, explicit=explicit_keys(layers))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """`--config FILE` (a YAML path) plus the flags given on the command line."""
        layers, source = args_layers(cls.sections(), args)
        return cls.build(*layers, source=source)

    def flat(self) -> dict[str, Any]:
        """The settings as one flat mapping (what a run directory stores as config.yaml)."""
        out: dict[str, Any] = {}
        for name in self.sections():
            out.update(dataclasses.asdict(getattr(self, name)))
        return out

    def with_sections(self, **sections: Any) -> Self:
        """A copy with some sections replaced (e.g. the train section with its precision resolved)."""
        return dataclasses.replace(self, **sections)  # type: ignore[type-var]


def explicit_keys(layers: tuple[Mapping[str, Any], ...]) -> frozenset[str]:
    """The keys set in any layer; a named model sets every key of its architecture."""
    keys = {k for layer in layers for k in layer}
    for layer in layers:
        name = layer.get("model")
        if isinstance(name, str) and name in NAMED_MODELS:
            keys |= set(NAMED_MODELS[name])
    return frozenset(keys)


@dataclass(frozen=True)
class PretrainSettings(Settings):
    """`tinylm pretrain`: MLM pre-training on a corpus."""

    KIND: ClassVar[str] = "pretrain"
    model: ModelConfig
    train: TrainConfig
    corpus: CorpusConfig
    run: RunConfig
    explicit: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FinetuneSettings(Settings):
    """`tinylm finetune`: a classifier fine-tuned on a task, from a pre-trained model or from scratch."""

    KIND: ClassVar[str] = "finetune"
    model: ModelConfig
    train: TrainConfig
    task: TaskConfig
    run: RunConfig
    explicit: frozenset[str] = frozenset()


#: The bundle of each recipe, by the name of its command (and of its grid job kind).
RECIPES: dict[str, type[PretrainSettings] | type[FinetuneSettings]] = {
    "pretrain": PretrainSettings,
    "finetune": FinetuneSettings,
}
