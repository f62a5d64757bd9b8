"""`tinylm data stats`: which files are used, counts per split and label, token-length percentiles."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tinylm.data.corpus import article_order, read_selected, wiki_index
from tinylm.data.sources import DataSource
from tinylm.data.tasks import load_pool, sample_task
from tinylm.data.tokenize import TokenizerInfo, encode_texts
from tinylm.errors import DataError
from tinylm.registry import paper_samples

PERCENTILES = (50, 90, 95, 99)


def length_stats(tok: TokenizerInfo, texts: list[str], max_length: int) -> dict[str, Any]:
    """Percentiles of untruncated WordPiece lengths (with [CLS]/[SEP]) and the share longer than
    max_length."""
    lengths = encode_texts(tok, texts, 100_000).lengths
    out: dict[str, Any] = {f"p{p}": int(np.percentile(lengths, p)) for p in PERCENTILES}
    out["max"] = int(lengths.max())
    out[f"share_over_{max_length}"] = round(float((lengths > max_length).mean()), 4)
    return out


def task_stats(
    name: str, source: DataSource, tok: TokenizerInfo, max_length: int, seed: int
) -> dict[str, Any]:
    pool = load_pool(name, source)
    out: dict[str, Any] = {"files": pool.files, "labels": len(pool.label_names), "options": pool.options}
    for split, recs in (("train", pool.train), ("test", pool.test)):
        counts = Counter(r.label for r in recs)
        out[split] = {
            "rows": len(recs),
            "per_label": {pool.label_names[k]: counts[k] for k in range(len(pool.label_names))},
            "tokens": length_stats(tok, [r.text for r in recs], max_length),
        }
    per = list(paper_samples(name))
    out["paper_sample"] = {"samples_per_label": per, "seed": seed}
    try:
        sampled = sample_task(pool, seed, per[0], per[1])
        out["paper_sample"] |= {"train": len(sampled.train), "test": len(sampled.test)}
    except DataError as e:  # a small or partial data dir: say so instead of failing the report
        out["paper_sample"]["error"] = str(e)
    return out


def wiki_stats(
    source: DataSource, tok: TokenizerInfo, max_length: int, seed: int, sample: int
) -> dict[str, Any]:
    index = wiki_index(source)
    texts = read_selected(index, article_order(index.total, seed)[:sample])
    return {
        "files": [str(p) for p in index.shards],
        "articles_per_shard": {p.name: c for p, c in zip(index.shards, index.counts, strict=True)},
        "articles": index.total,
        "tokens_sample": {"articles": sample, "order_seed": seed, **length_stats(tok, texts, max_length)},
    }


def format_stats(stats: dict[str, Any], max_length: int) -> str:
    lines = []
    for name, s in stats.items():
        if name == "tokenizer":
            lines.append(f"tokenizer  {s['path']}  vocab {s['vocab_size']}")
            continue
        lines.append("")
        lines.append(f"== {name}")
        lines.extend(f"   file  {f}" for f in s["files"])
        if name == "wikipedia":
            for shard, c in s["articles_per_shard"].items():
                lines.append(f"   {shard:<32} {c:>9,} articles")
            lines.append(f"   {'total':<32} {s['articles']:>9,} articles")
            t = s["tokens_sample"]
            lines.append(
                f"   tokens (first {t['articles']:,} of the seed-{t['order_seed']} order, untruncated): "
                + "  ".join(f"{k} {v}" for k, v in t.items() if k not in ("articles", "order_seed"))
            )
            continue
        if s["options"]:
            lines.append("   options  " + ", ".join(f"{k}={v}" for k, v in s["options"].items()))
        for split in ("train", "test"):
            sp = s[split]
            per = sp["per_label"]
            if len(per) <= 14:
                labels = ", ".join(f"{k}:{v}" for k, v in per.items())
            else:
                vals = list(per.values())
                labels = f"{len(per)} labels, {min(vals)}..{max(vals)} each"
            lines.append(f"   {split:<5} {sp['rows']:>7,} rows  [{labels}]")
            lines.append("         tokens: " + "  ".join(f"{k} {v}" for k, v in sp["tokens"].items()))
        ps = s["paper_sample"]
        if "error" in ps:
            lines.append(f"   paper sample: not possible here ({ps['error']})")
            continue
        lines.append(
            f"   paper sample ({ps['samples_per_label'][0]}/{ps['samples_per_label'][1]} per label, seed "
            f"{ps['seed']}): "
            f"{ps['train']:,} train / {ps['test']:,} test"
        )
    return "\n".join(lines)


def collect_stats(
    source: DataSource,
    tok: TokenizerInfo,
    datasets: list[str],
    max_length: int = 128,
    seed: int = 42,
    wiki_sample: int = 5000,
) -> dict[str, Any]:
    stats: dict[str, Any] = {"tokenizer": {"path": tok.path, "vocab_size": tok.vocab_size}}
    for name in datasets:
        if name == "wikipedia":
            stats[name] = wiki_stats(source, tok, max_length, seed, wiki_sample)
        else:
            stats[name] = task_stats(name, source, tok, max_length, seed)
    return stats
