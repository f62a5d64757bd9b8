"""Presets of `tinylm reproduce`: typed, and checked whole before anything runs.

A preset (YAML, shipped as tinylm/configs/reproduce-NAME.yaml, or any file with the same keys) fixes
only sizes: models, corpus sizes, epochs, seeds, samples per label. Code paths never depend on it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinylm.config import PACKAGE_CONFIGS
from tinylm.errors import ConfigError
from tinylm.registry import TASKS

SHIPPED = ("smoke", "quick", "cpu", "future", "paper")


@dataclass(frozen=True)
class Controlled:
    """E3's controlled test: two equal-size corpora chosen for high / low overlap with `task`, each
    pre-trained `seeds` times (the test's replication unit)."""

    task: str
    num_articles: int
    pool: int
    seeds: int = 1


@dataclass(frozen=True)
class E0:
    """E0 (beyond the paper): fine-tune snapshots of the main deep pre-training, taken at 0 and at
    budget/2^k tokens (k = points … 1) plus the finished run, on `tasks` with the heads `poolings` (none:
    every head of the preset), each with fine-tuning seeds 0 … `seeds`−1 (the gap is paired with the
    scratch run of the same seed)."""

    tasks: list[str]
    points: int
    seeds: int = 1
    poolings: list[str] | None = None

    def heads(self, preset_poolings: list[str]) -> list[str]:
        """The heads E0 fine-tunes: its own list, or every head of the preset."""
        return list(self.poolings) if self.poolings is not None else list(preset_poolings)


@dataclass(frozen=True)
class E5:
    """E5 (beyond the paper): `model` pre-trained on a corpus of `articles` documents selected out of the
    first `pool` Wikipedia articles for each task in `tasks` (by `metric`, `tinylm corpus select`) and on
    the generic nested corpus of `main_corpus` articles, at `tokens` × each of `fractions`, `seeds` times;
    every one of them fine-tuned on every task in `tasks` (the cross-task cells) next to a scratch `model`.
    `pretrain`: settings over the preset's pretrain section."""

    tasks: list[str]
    articles: int
    pool: int
    tokens: int
    model: dict[str, Any]
    metric: str = "weighted"
    fractions: list[float] = field(default_factory=lambda: [1.0, 0.25])
    seeds: int = 1
    pretrain: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class E6:
    """E6 (beyond the paper): committees of k = 1 … `per_arch` members of each shallow architecture and
    mixes of all of them (k = 1 … per_arch × architectures), on `tasks`: accuracy, latency per input at
    each of `batch`, training FLOPs. The member pool extends the committee members of E4 (member i has
    architecture i mod len(shallow), seed i)."""

    tasks: list[str]
    per_arch: int
    batch: list[int] = field(default_factory=lambda: [1, 32])
    reps: int = 10


@dataclass(frozen=True)
class Distill:
    """Distillation (beyond the paper): one student with member 0's pre-trained weights, fine-tuned on the
    soft probabilities (at `temperature`, weight 1 − `alpha`) of the committee of every member of the pool
    (E6's, else E4's), on `tasks`; compared with the committee, the best member and the deep model."""

    tasks: list[str]
    temperature: float = 2.0
    alpha: float = 0.5
    #: also a second student that learns, besides, from the task's E5-selected corpus as unlabelled
    #: task-domain text (`distill_unlabelled`); needs the task among e5.tasks
    unlabelled: bool = False


@dataclass(frozen=True)
class Latency:
    """E4's latency table: committee sizes, batch sizes, precisions, timed calls at batch 1."""

    k: list[int]
    batch: list[int]
    precision: list[str]
    reps: int
    onnx: bool = True  #: also time the ONNX exports under onnxruntime (when installed)


@dataclass(frozen=True)
class Preset:
    name: str
    path: str
    tasks: list[str]
    seeds: int
    deep: dict[str, Any]  #: model settings of the deep model (a named model or layer sizes)
    shallow: list[dict[str, Any]]  #: model settings the committee members cycle over
    members: int
    corpus_sizes: list[int]
    main_corpus: int
    eval_articles: int
    max_length: int
    pretrain: dict[str, Any]  #: pre-training settings (keys of `tinylm pretrain`)
    finetune: dict[str, Any]  #: fine-tuning settings (keys of `tinylm finetune`)
    samples: dict[str, list[int]]  #: task -> [train, test] examples per label
    latency: Latency
    #: E3's controlled high/low-overlap corpora; none: C3 is "not tested"
    controlled: Controlled | None = None
    precision: str = "fp32"
    description: str = ""
    #: adequacy gate: a claim is judged only on pre-trained models whose held-out MLM loss is at least this
    #: many nats below the unigram baseline of the same targets; otherwise it is "not tested"
    gate_nats: float = 1.5
    #: C4's non-inferiority margin: the committee may be at most this many points below the deep model
    c4_margin_pp: float = 2.0
    #: fine-tuning learning rates swept per arm (each run then needs finetune.validation_per_label > 0: the
    #: rate is chosen on validation accuracy); empty: the finetune section's lr only
    finetune_lrs: list[float] = field(default_factory=list)
    #: independent pre-trainings of the deep model on the main corpus: C1's replication unit
    pretrain_seeds: int = 1
    #: independent pre-trainings of each other corpus size (seeds 0 … size_seeds−1; at most
    #: pretrain_seeds): C2's replication unit, paired with the main corpus's pre-training of the same seed
    size_seeds: int = 1
    #: C2 the paper's way (reported as C2-epochs): every corpus size also pre-trained for this many epochs
    #: over its subset (a larger subset: more tokens), size_seeds times; none: only the equal-token design
    c2_epochs: int | None = None
    #: C2 the paper's way at the main run's epochs (instead of `c2_epochs`): size n trains for
    #: pretrain.max_tokens × n / main_corpus tokens (the nested subsets' mean article lengths agree to
    #: < 0.1 %, so that is the main run's epochs over every subset), and the main size's arm *is* the main
    #: run: no second pre-training of the largest cost
    c2_epochs_of_main: bool = False
    #: classifier heads fine-tuned in E1 and E0 (the first one also in E2–E4): cls (the paper's), mean
    poolings: list[str] = field(default_factory=lambda: ["cls"])
    #: E0, gap vs pre-training budget; none: not run
    e0: E0 | None = None
    #: the committee members' pre-training settings over `pretrain` (e.g. more tokens: a 1-layer model is
    #: faster per token and needs more of them to pass the gate)
    member_pretrain: dict[str, Any] = field(default_factory=dict)
    #: a committee member whose pre-training ends below the gate is trained again with another seed, at
    #: most this many times (the attempts set aside are in the report; `paper.reseed`); 0: never
    member_reseeds: int = 0
    #: the controlled corpora's pre-training settings over `pretrain`: their articles are all full-length,
    #: so a token budget buys fewer optimizer steps than on a nested subset with its short articles
    controlled_pretrain: dict[str, Any] = field(default_factory=dict)
    #: E5 task-specific vs generic corpora; none: not run
    e5: E5 | None = None
    #: E6 larger and mixed committees; none: not run
    e6: E6 | None = None
    #: a committee distilled into one member; none: not run
    distill: Distill | None = None

    @property
    def member_pool(self) -> int:
        """Pre-trained committee members: E4's, or E6's pool when that is larger."""
        extra = self.e6.per_arch * len(self.shallow) if self.e6 else 0
        return max(self.members, extra)

    @property
    def c2_by_epochs(self) -> bool:
        """Whether C2 also runs the paper's equal-epochs design."""
        return self.c2_epochs is not None or self.c2_epochs_of_main

    def c2_epochs_reuses_main(self, n: int) -> bool:
        """Whether the equal-epochs arm of corpus size n is the main run itself."""
        return self.c2_epochs_of_main and n == self.main_corpus

    def member_model(self, i: int) -> dict[str, Any]:
        """Member i's model settings: the shallow architectures in turn."""
        return self.shallow[i % len(self.shallow)]

    def as_dict(self) -> dict[str, Any]:
        """The preset as written (for plan.json and the report), without name and path."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in ("name", "path")}


def _type_problems(value: Any, tp: Any, where: str) -> list[str]:
    """Problems with `value` as an instance of the annotation `tp` (int, str, list[X], dict[str, X], a
    dataclass), each naming its place (`samples.agnews[1]`)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return []
    if type(None) in args:  # X | None
        return [] if value is None else _type_problems(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        return _mapping_problems(value, tp, where)
    if origin is list:
        if not isinstance(value, list) or not value:
            return [f"{where}: expected a non-empty list, got {value!r}"]
        return [p for i, v in enumerate(value) for p in _type_problems(v, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {value!r}"]
        return [p for k, v in value.items() for p in _type_problems(v, args[1], f"{where}.{k}")]
    return _scalar_problems(value, tp, where)


def _scalar_problems(value: Any, tp: Any, where: str) -> list[str]:
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{where}: expected an integer, got {value!r}"]
    if tp is str and not isinstance(value, str):
        return [f"{where}: expected a string, got {value!r}"]
    if tp is bool and not isinstance(value, bool):
        return [f"{where}: expected true or false, got {value!r}"]
    if tp is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        return [f"{where}: expected a number, got {value!r}"]
    return []


def _mapping_problems(value: Any, tp: Any, where: str) -> list[str]:
    """A nested dataclass given as a mapping: unknown keys, missing required keys, each value's type."""
    fields = dataclasses.fields(tp)
    if not isinstance(value, dict):
        return [f"{where}: expected a mapping with keys {', '.join(f.name for f in fields)}"]
    hints = typing.get_type_hints(tp)
    names = {f.name for f in fields}
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    out = [f"{where}.{k}: unknown key" for k in value if k not in names]
    out += [f"{where}.{n}: missing" for n in sorted(required - set(value))]
    return out + [
        p for k, v in value.items() if k in names for p in _type_problems(v, hints[k], f"{where}.{k}")
    ]


def _c2_epochs_problems(raw: dict[str, Any]) -> list[str]:
    """The equal-epochs design of C2: explicit epochs, or the main run's, not both."""
    out = []
    if raw.get("c2_epochs") is not None and raw["c2_epochs"] < 1:
        out.append(f"c2_epochs: must be positive (or absent), got {raw['c2_epochs']}")
    if raw.get("c2_epochs_of_main") and raw.get("c2_epochs") is not None:
        out.append("c2_epochs_of_main: set together with c2_epochs; the equal-epochs design takes one")
    if raw.get("c2_epochs_of_main") and not raw["pretrain"].get("max_tokens"):
        out.append("c2_epochs_of_main: needs pretrain.max_tokens (the main run's budget it scales)")
    return out


def _task_problems(raw: dict[str, Any]) -> list[str]:
    out = []
    for task in raw["tasks"]:
        if task not in TASKS:
            out.append(f"tasks: {task!r} is not a registered task (expected one of {', '.join(TASKS)})")
        sizes = raw["samples"].get(task)
        if sizes is None:
            out.append(f"samples: no per-label sample sizes for task {task}")
        elif len(sizes) != 2 or min(sizes) < 1:
            out.append(f"samples.{task}: expected [train, test] positive examples per label, got {sizes}")
    return out


def _semantic_problems(raw: dict[str, Any]) -> list[str]:
    """Checks across keys, on a preset whose types are right."""
    out = []
    for key in ("seeds", "members", "main_corpus", "eval_articles", "max_length"):
        if raw[key] < 1:
            out.append(f"{key}: must be positive, got {raw[key]}")
    if raw["members"] < 2:
        out.append("members: a committee needs at least 2 members")
    if raw["main_corpus"] not in raw["corpus_sizes"]:
        out.append(f"main_corpus: {raw['main_corpus']} must be one of corpus_sizes {raw['corpus_sizes']}")
    out += [f"corpus_sizes: {n} is not positive" for n in raw["corpus_sizes"] if n < 1]
    out += _task_problems(raw)
    out += _controlled_problems(raw.get("controlled"))
    if raw.get("controlled_pretrain") and not raw.get("controlled"):
        out.append("controlled_pretrain: set, but the preset has no controlled corpora")
    out += _e0_problems(raw)
    out += _future_problems(raw)
    out += _duplicate_problems(raw)
    if raw.get("member_reseeds", 0) < 0:
        out.append(f"member_reseeds: must be 0 or more, got {raw['member_reseeds']}")
    if raw.get("pretrain_seeds", 1) < 1:
        out.append(f"pretrain_seeds: must be positive, got {raw['pretrain_seeds']}")
    out += _c2_epochs_problems(raw)
    if not 1 <= raw.get("size_seeds", 1) <= raw.get("pretrain_seeds", 1):
        out.append(
            f"size_seeds: must be between 1 and pretrain_seeds ({raw.get('pretrain_seeds', 1)}: each "
            "replicate of a size is paired with the main corpus's pre-training of the same seed), got "
            f"{raw['size_seeds']}"
        )
    out += [
        f"poolings: {x!r} is not a head (expected cls or mean)"
        for x in raw.get("poolings", ["cls"])
        if x not in ("cls", "mean")
    ]
    if raw.get("finetune_lrs") and not raw["finetune"].get("validation_per_label"):
        out.append(
            "finetune_lrs: a learning-rate sweep is chosen on validation; set finetune.validation_per_label"
        )
    if raw.get("precision", "fp32") not in ("fp32", "bf16", "auto"):
        out.append(f"precision: expected fp32, bf16 or auto, got {raw['precision']!r}")
    return out


#: Lists whose entries must be distinct: a repeated corpus size, rate, head, committee size... would be
#: counted twice by the analysis (duplicate rows and columns, statistics made up from copies).
DISTINCT_LISTS = (
    ("tasks",),
    ("corpus_sizes",),
    ("finetune_lrs",),
    ("poolings",),
    ("e0", "tasks"),
    ("e0", "poolings"),
    ("e5", "tasks"),
    ("e5", "fractions"),
    ("e6", "tasks"),
    ("e6", "batch"),
    ("distill", "tasks"),
    ("latency", "k"),
    ("latency", "batch"),
    ("latency", "precision"),
)


def _duplicate_problems(raw: dict[str, Any]) -> list[str]:
    out = []
    for path in DISTINCT_LISTS:
        value: Any = raw
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list):
            repeated = sorted({repr(v) for v in value if value.count(v) > 1})
            if repeated:
                out.append(f"{'.'.join(path)}: {', '.join(repeated)} listed more than once in {value}")
    return out


def _controlled_problems(ctl: dict[str, Any] | None) -> list[str]:
    if ctl is None:
        return []
    out = []
    if ctl["task"] not in TASKS:
        out.append(f"controlled.task: {ctl['task']!r} is not a registered task")
    if ctl["num_articles"] > ctl["pool"]:
        out.append("controlled.num_articles: larger than controlled.pool")
    if ctl.get("seeds", 1) < 1:
        out.append(f"controlled.seeds: must be positive, got {ctl['seeds']}")
    return out


def _e0_problems(raw: dict[str, Any]) -> list[str]:
    e0 = raw.get("e0")
    if e0 is None:
        return []
    out = [f"e0.tasks: {t!r} is not one of the preset's tasks" for t in e0["tasks"] if t not in raw["tasks"]]
    if e0["points"] < 1:
        out.append(f"e0.points: must be positive, got {e0['points']}")
    if e0.get("seeds", 1) < 1:
        out.append(f"e0.seeds: must be positive, got {e0['seeds']}")
    heads = raw.get("poolings", ["cls"])
    out += [
        f"e0.poolings: {x!r} is not one of the preset's poolings {heads}"
        for x in e0.get("poolings") or []
        if x not in heads
    ]
    if e0.get("poolings") == []:
        out.append("e0.poolings: empty (leave it out to fine-tune every head of the preset)")
    budget = raw["pretrain"].get("max_tokens")
    if not isinstance(budget, int) or budget < 2 ** max(1, e0["points"]):
        out.append("e0: needs pretrain.max_tokens (the budget its snapshots divide), an integer >= 2^points")
    return out


def _future_problems(raw: dict[str, Any]) -> list[str]:
    """E5, E6 and distill: their tasks are the preset's, their sizes positive."""
    from tinylm.corpus_select import METRICS

    out = []
    for key in ("e5", "e6", "distill"):
        tasks = (raw.get(key) or {}).get("tasks", [])
        out += [
            f"{key}.tasks: {t!r} is not one of the preset's tasks" for t in tasks if t not in raw["tasks"]
        ]
    e5, e6, dist = raw.get("e5"), raw.get("e6"), raw.get("distill")
    if e5:
        out += [f"e5.{k}: must be positive, got {e5[k]}" for k in ("articles", "pool", "tokens") if e5[k] < 1]
        out += [f"e5.fractions: {f} is not in (0, 1]" for f in e5.get("fractions", []) if not 0 < f <= 1]
        if e5.get("metric", "weighted") not in METRICS:
            out.append(f"e5.metric: expected one of {', '.join(METRICS)}, got {e5['metric']!r}")
        if e5.get("seeds", 1) < 1:
            out.append(f"e5.seeds: must be positive, got {e5['seeds']}")
        if e5["articles"] + raw["eval_articles"] > e5["pool"]:
            out.append("e5.pool: must hold e5.articles + eval_articles documents")
    if e6 and e6["per_arch"] < 1:
        out.append(f"e6.per_arch: must be positive, got {e6['per_arch']}")
    if e6 and e6.get("reps", 10) < 1:
        out.append(f"e6.reps: must be positive, got {e6['reps']}")
    if dist and dist.get("temperature", 2.0) <= 0:
        out.append(f"distill.temperature: must be positive, got {dist['temperature']}")
    if dist and not 0 <= dist.get("alpha", 0.5) <= 1:
        out.append(f"distill.alpha: must be in [0, 1], got {dist['alpha']}")
    if dist and dist.get("unlabelled"):
        missing = [t for t in dist["tasks"] if t not in (e5 or {}).get("tasks", [])]
        if missing:
            out.append(f"distill.unlabelled: the text is E5's selected corpus; e5 selects none for {missing}")
    return out


def preset_path(name: str) -> Path:
    path = PACKAGE_CONFIGS / f"reproduce-{name}.yaml" if name in SHIPPED else Path(name)
    if not path.is_file():
        raise ConfigError(
            [f"preset: no preset {name!r} (expected {', '.join(SHIPPED)} or a YAML file)"], "reproduce"
        )
    return path


def load_preset(name: str) -> Preset:
    """A shipped preset by name, or a YAML file; every problem is reported at once."""
    path = preset_path(name)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError([f"not valid YAML: {e}"], str(path)) from e
    if not isinstance(raw, dict):
        raise ConfigError([f"expected a mapping of preset keys, got {type(raw).__name__}"], str(path))
    hints = typing.get_type_hints(Preset)
    fields = {f.name: f for f in dataclasses.fields(Preset) if f.name not in ("name", "path")}
    problems = [f"{k}: unknown preset key" for k in raw if k not in fields]
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    problems += [f"{k}: missing" for k in sorted(required) if k not in raw]
    problems += [p for k, v in raw.items() if k in fields for p in _type_problems(v, hints[k], k)]
    if not problems:
        problems = _semantic_problems(raw)
    if problems:
        raise ConfigError(problems, str(path))
    values = {k: v for k, v in raw.items() if k in fields}
    values["controlled"] = Controlled(**raw["controlled"]) if raw.get("controlled") else None
    values["e0"] = E0(**raw["e0"]) if raw.get("e0") else None
    values["latency"] = Latency(**raw["latency"])
    values["e5"] = E5(**raw["e5"]) if raw.get("e5") else None
    values["e6"] = E6(**raw["e6"]) if raw.get("e6") else None
    values["distill"] = Distill(**raw["distill"]) if raw.get("distill") else None
    values["description"] = str(raw.get("description") or "")
    return Preset(name=path.stem.removeprefix("reproduce-"), path=str(path), **values)
