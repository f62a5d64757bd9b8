"""The named things tinylm knows, one place each: special tokens, model architectures, tasks.

Pure data (imports nothing from tinylm): configuration, data loading, models, benchmarks and the
paper's experiments all read these tables. A new task is one `TaskSpec` entry (plus a reader only
when its file format is new); a new named architecture is one `NAMED_MODELS` entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------- special tokens (bert-base-uncased)

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
SPECIAL_IDS: dict[str, int] = {
    "[PAD]": PAD_ID,
    "[UNK]": UNK_ID,
    "[CLS]": CLS_ID,
    "[SEP]": SEP_ID,
    "[MASK]": MASK_ID,
}
BERT_VOCAB_SIZE = 30522

#: The paper's Wikipedia order: `shuffle(seed=42)`, then the first N articles (paper.md §4).
PAPER_CORPUS_SEED = 42

# ---------------------------------------------------------------- named architectures

#: The paper's models (paper.md §3.2: head size 64, FFN 4 × hidden, 128 positions) and two tiny shapes
#: used by benchmarks and the CPU presets. Values are ModelConfig fields.
NAMED_MODELS: dict[str, dict[str, Any]] = {
    "bert6": {"layers": 6, "hidden_size": 768, "heads": 12, "ffn_size": 3072},
    "bert1-h12": {"layers": 1, "hidden_size": 768, "heads": 12, "ffn_size": 3072},
    "bert1-h24": {"layers": 1, "hidden_size": 1536, "heads": 24, "ffn_size": 6144},
    "bert1-conv2-k3-d64-h12": {
        "layers": 1, "hidden_size": 768, "heads": 12, "ffn_size": 3072,
        "conv_layers": 2, "conv_kernel": "3", "conv_channels": 64,
    },
    "bert1-conv2-k3-d64-h8": {
        "layers": 1, "hidden_size": 512, "heads": 8, "ffn_size": 2048,
        "conv_layers": 2, "conv_kernel": "3", "conv_channels": 64,
    },
    "bert1-conv3-k3-d32-h12": {
        "layers": 1, "hidden_size": 768, "heads": 12, "ffn_size": 3072,
        "conv_layers": 3, "conv_kernel": "3", "conv_channels": 32,
    },
    "bert1-conv2-k16x3-d64-h12": {
        "layers": 1, "hidden_size": 768, "heads": 12, "ffn_size": 3072,
        "conv_layers": 2, "conv_kernel": "16x3", "conv_channels": 64,
    },
    "tiny-1x256": {"layers": 1, "hidden_size": 256, "heads": 4, "ffn_size": 1024},
    "tiny-2x128": {"layers": 2, "hidden_size": 128, "heads": 2, "ffn_size": 512},
    "tiny-1x128": {"layers": 1, "hidden_size": 128, "heads": 2, "ffn_size": 512},
}  # fmt: skip

#: The paper's deep reference model.
PAPER_DEEP_MODEL = "bert6"

# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: where its files are, how a row becomes text, and the paper's sample sizes.

    `reader` names the file format: 'label_csv' (header-less `label,field,...` rows with labels
    1..K; text = the `text_columns` joined by a space) or 'fewrel' (FewRel 1.0 JSON).
    """

    name: str
    label_names: tuple[str, ...]  #: canonical names (hub path; local files must have as many)
    train_per_label: int  #: the paper's training examples per label
    test_per_label: int  #: the paper's test examples per label
    local_files: dict[str, str]  #: key -> path under the data directory
    reader: str = "label_csv"
    columns: tuple[str, ...] = ()  #: label_csv: the CSV's columns, the label first
    text_columns: tuple[str, ...] = ()  #: label_csv: the columns joined into the text
    hub_id: str | None = None  #: Hugging Face dataset id (None: local files only)
    hub_text_field: str = "text"
    source_note: str = ""  #: how the local files differ from the paper's data (for reports)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


TASKS: dict[str, TaskSpec] = {
    "agnews": TaskSpec(
        name="agnews",
        label_names=("World", "Sports", "Business", "Sci/Tech"),
        train_per_label=1000,
        test_per_label=1000,
        local_files={
            "train": "agnews/train_subset_20k.csv.gz",
            "test": "agnews/test.csv",
            "classes": "agnews/classes.txt",
        },
        columns=("label", "title", "description"),
        text_columns=("title", "description"),
        hub_id="ag_news",
        hub_text_field="text",
        source_note="AG News training examples are drawn from a balanced 20,000-row subset of the 120,000-row "
        "train set (the test set is complete).",
    ),
    "dbpedia": TaskSpec(
        name="dbpedia",
        label_names=(
            "Company",
            "EducationalInstitution",
            "Artist",
            "Athlete",
            "OfficeHolder",
            "MeanOfTransportation",
            "Building",
            "NaturalPlace",
            "Village",
            "Animal",
            "Plant",
            "Album",
            "Film",
            "WrittenWork",
        ),  # fmt: skip
        train_per_label=100,
        test_per_label=100,
        local_files={
            "train": "dbpedia/train_subset30k.csv.gz",
            "test": "dbpedia/test_subset.csv.gz",
            "classes": "dbpedia/classes.txt",
        },
        columns=("label", "title", "content"),
        text_columns=("content",),
        hub_id="dbpedia_14",
        hub_text_field="content",
        source_note="DBpedia test rows come from an 11,891-row real subset of the 70,000-row official test "
        "split; training rows from a 30,000-row subset.",
    ),
    "fewrel": TaskSpec(
        name="fewrel",
        label_names=(),  # the relations of train_wiki.json, in file order (64)
        train_per_label=630,
        test_per_label=70,
        local_files={"train": "fewrel/train_wiki.json", "names": "fewrel/pid2name.json"},
        reader="fewrel",
        source_note="FewRel: train_wiki.json's 700 instances per relation split 630/70 by a seeded shuffle "
        "(seed 42); entity spans marked '@ head @' and '# tail #' (the paper's text format is unknown).",
    ),
}


def paper_samples(task: str) -> tuple[int, int]:
    """The paper's (train, test) examples per label of a registered task."""
    spec = TASKS[task]
    return spec.train_per_label, spec.test_per_label


def resolve_per_label(task: str | None, value: int | None, split: str) -> int | None:
    """Samples per label as configured: -1 means the task's paper default (all rows for a file task),
    None means all rows."""
    if value != -1:
        return value
    if task is None or task not in TASKS:
        return None
    train, test = paper_samples(task)
    return train if split == "train" else test


#: Committee rules: average of softmax outputs (the paper's soft committee), of logits, majority vote.
RULES = ("mean_prob", "mean_logit", "vote")

#: Shapes timed by `tinylm bench pretrain` (short name -> registered architecture).
BENCH_SHAPES = {"bert6": "bert6", "1x256": "tiny-1x256", "2x128": "tiny-2x128", "1x128": "tiny-1x128"}
