"""tinylm: tiny BERT language models — pre-training, fine-tuning, soft committees.

Reproduces "Tiny language models" (Gross, Tzach, Halevi, Koresh, Kanter, arXiv 2507.14871).
"""

__version__ = "0.1.0"
