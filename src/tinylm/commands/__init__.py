"""The `tinylm` subcommands, one module per group: each registers its parser and a handler that turns the
arguments into a call of a library function and prints what it returns. No work is done here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from tinylm.commands.data import add_corpus, add_data_parser, add_overlap
from tinylm.commands.experiments import add_bench, add_reproduce
from tinylm.commands.models import add_committee, add_export, add_predict, add_prune
from tinylm.commands.training import add_distill, add_finetune, add_pretrain

#: Every subcommand's parser, in the order `tinylm --help` lists them.
REGISTER: list[Callable[[argparse._SubParsersAction[Any]], None]] = [
    add_data_parser,
    add_reproduce,
    add_pretrain,
    add_finetune,
    add_distill,
    add_overlap,
    add_corpus,
    add_committee,
    add_predict,
    add_export,
    add_prune,
    add_bench,
]
