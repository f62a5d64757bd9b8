"""The data layer: sources (local dir or hub) -> tasks / Wikipedia corpus -> WordPiece token arrays."""

from tinylm.data.corpus import WikiCorpus, load_wiki_corpus
from tinylm.data.sources import DataSource, resolve_source
from tinylm.data.tasks import Record, TaskData, load_task, sample_per_label
from tinylm.data.tokenize import EncodedTexts, load_tokenizer

__all__ = [
    "DataSource",
    "EncodedTexts",
    "Record",
    "TaskData",
    "WikiCorpus",
    "load_task",
    "load_tokenizer",
    "load_wiki_corpus",
    "resolve_source",
    "sample_per_label",
]
