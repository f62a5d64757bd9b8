"""report.md: the analysis' results, timings and the preset rendered as Markdown (nothing is computed
here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from tinylm.paper.analyse import ALPHA
from tinylm.paper.presets import Preset
from tinylm.paper.stats import mean_std
from tinylm.registry import NAMED_MODELS, PAPER_DEEP_MODEL, TASKS, paper_samples


def _p(x: float | None) -> str:
    return "–" if x is None else (f"{x:.3g}" if x >= 1e-4 else "<1e-4")


def deviations(p: Preset, tasks: list[str], seeds: int) -> list[str]:
    """The differences between this run and the paper, generated from the registry and the preset."""
    paper_deep = NAMED_MODELS[PAPER_DEEP_MODEL]
    out = []
    if p.deep.get("model") != PAPER_DEEP_MODEL and {k: p.deep.get(k) for k in paper_deep} != paper_deep:
        out.append(
            f"The deep model is {p.deep} instead of BERT-6 (6/768/12/3072): the preset scales it down for "
            f"this machine."
        )
    if sorted(p.corpus_sizes) != [20000, 40000, 90000]:
        out.append(
            f"Pre-training subsets of {', '.join(f'{n:,}' for n in sorted(p.corpus_sizes))} articles "
            f"instead of 20K/40K/90K."
        )
    if "max_tokens" in p.pretrain:
        out.append(
            f"The deep model's pre-trainings on nested subsets all see {p.pretrain['max_tokens']:,} training "
            "tokens instead of 50 epochs of their corpus: nested corpus sizes differ in diversity (how "
            "often an article repeats), not in tokens seen (in the paper a larger subset also means more "
            "tokens)." + _budget_overrides(p)
        )
    elif p.pretrain.get("epochs") != 50:
        out.append(f"{p.pretrain.get('epochs')} pre-training epochs instead of 50.")
    if p.finetune.get("epochs") != 50:
        out.append(f"{p.finetune.get('epochs')} fine-tuning epochs instead of 50.")
    if p.pretrain.get("lr") != 5e-5 or p.finetune.get("lr") != 5e-5:
        out.append(
            f"Learning rates {p.pretrain.get('lr')} (pre-training) / {p.finetune.get('lr')} (fine-tuning) "
            f"instead of 5e-5 "
            "(small models trained for few epochs need larger steps)."
        )
    if p.pretrain.get("packing"):
        out.append(
            "Pre-training samples are full 128-token windows over each article's whole lead (packing), "
            "not its first 128 tokens: more tokens per article than the paper's rule."
        )
    if p.pretrain.get("schedule_unit", "step") == "step":
        out.append(
            "The linear LR schedule is stepped per optimizer step (the paper's code steps it once per epoch)."
        )
    return out + _recipe_deviations(p) + _data_deviations(p, tasks) + _protocol_deviations(p, seeds)


#: The recipe settings (beyond budget, learning rate and schedule) compared with the paper's, whose values
#: are read from the shipped `paper-pretrain` / `paper-finetune-agnews` configs over tinylm's defaults.
RECIPE_KEYS = (
    "mask_prob",
    "mask_prob_start",
    "predict_prob",
    "sampled_softmax",
    "mask_replace",
    "mask_random",
    "dropout",
    "attention_dropout",
    "batch_size",
    "weight_decay",
    "position_init",
    "attention_init",
    "attention_window_start",
    "grad_clip",
)
FINETUNE_KEYS = ("dropout", "attention_dropout", "batch_size", "weight_decay", "grad_clip")


def _paper(kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The paper's values of `keys`: its shipped config (`paper-pretrain` or `paper-finetune-agnews`)."""
    from tinylm.config import named_config, read_yaml
    from tinylm.settings import FinetuneSettings, PretrainSettings

    if kind == "pretrain":
        flat = PretrainSettings.build(read_yaml(named_config("paper-pretrain"))).flat()
    else:
        flat = FinetuneSettings.build(read_yaml(named_config("paper-finetune-agnews"))).flat()
    return {k: flat[k] for k in keys}


def _changes(flat: dict[str, Any], paper: dict[str, Any]) -> list[str]:
    """The settings of `flat` (a run's settings over tinylm's defaults) that are not the paper's."""
    out = []
    for k, want in paper.items():
        if flat[k] == want or (k == "mask_prob_start" and flat[k] == flat["mask_prob"]):
            continue
        if k == "mask_prob_start":
            out.append(
                f"masking {flat[k]:.0%} → {flat['mask_prob']:.0%} over the run (mask_prob_start {flat[k]})"
            )
        elif k == "sampled_softmax":
            out.append(
                f"sampled softmax over {flat[k]:,} candidates per step for the first "
                f"{flat['sampled_softmax_share']:.0%} of the steps (the paper: the full vocabulary)"
            )
        else:
            out.append(f"{k} {flat[k]} (the paper: {'none' if want is None else want})")
    return out


def _recipe_deviations(p: Preset) -> list[str]:
    """The pre-training recipe where it is not the paper's (the deep models', then what the committee
    members' and the controlled corpora's settings change on top of it), and the fine-tuning's."""
    from tinylm.settings import FinetuneSettings, PretrainSettings

    def pre(settings: dict[str, Any]) -> list[str]:
        return _changes(PretrainSettings.build(settings).flat(), paper_pre)

    paper_pre = _paper("pretrain", RECIPE_KEYS)
    base = pre(p.pretrain)
    out = [f"Pre-training recipe: {'; '.join(base)}."] if base else []
    for who, over in (
        ("committee members", p.member_pretrain),
        ("controlled corpora", p.controlled_pretrain),
    ):
        extra = sorted(set(pre(p.pretrain | over)) - set(base)) if over else []
        if extra:
            out.append(f"The {who} also pre-train with: {'; '.join(extra)}.")
    tuned = _changes(
        FinetuneSettings.build({"task": "agnews"} | p.finetune).flat(), _paper("finetune", FINETUNE_KEYS)
    )
    return out + ([f"Fine-tuning: {'; '.join(tuned)}."] if tuned else [])


def _data_deviations(p: Preset, tasks: list[str]) -> list[str]:
    out = []
    for t in tasks:
        if t in TASKS and tuple(p.samples[t]) != paper_samples(t):
            want = paper_samples(t)
            out.append(
                f"{t}: {p.samples[t][0]} train / {p.samples[t][1]} test examples per label instead of "
                f"{want[0]}/{want[1]}."
            )
        elif t not in TASKS:
            out.append(f"{t}: not one of the paper's tasks.")
    out.append(
        "Wikipedia: 324,645 article leads (first 2,000 characters) from 2014/2015/2021 WikiExtractor dumps "
        "(shared/data/MANIFEST.md), not HF wikimedia/wikipedia 20231101.en; subsets are the first N of one "
        "seed-42 order."
    )
    return out + [TASKS[t].source_note for t in TASKS if t in tasks and TASKS[t].source_note]


def _protocol_deviations(p: Preset, seeds: int) -> list[str]:
    val = p.finetune.get("validation_per_label")
    accuracy = (
        f"Accuracies are test accuracies of the epoch{' and learning rate' if p.finetune_lrs else ''} "
        f"chosen on a "
        f"validation split of {val} training examples per label; the test split is read once per run."
        if val
        else "Accuracies are final-epoch test accuracies (best-epoch values are in results.json); the test "
        "split "
        "is also what is evaluated every epoch, as in the paper's code (no separate validation split)."
    )
    ctl = p.controlled
    controlled = f"the controlled corpora (C3) are pre-trained {ctl.seeds} time(s) each; " if ctl else ""
    return [
        accuracy,
        f"The committee members are {p.members} independently pre-trained models cycling over {p.shallow}; "
        "the paper's exact members and their number are unknown.",
        f"Precision {p.precision} on CPU (the paper: CUDA fp16 AMP); dropout masks from 16-bit random "
        "integers (p quantised to 1/65536).",
        f"C1: {p.pretrain_seeds} pre-training run(s) of the deep model on the main corpus, each with "
        f"{seeds} fine-tuning seed(s) per arm; {controlled}"
        f"the other corpus sizes (C2) use pre-training seeds 0 … {p.size_seeds - 1} and the committee "
        "reference seed 0.",
    ]


CLAIMS = {
    "C1": "pre-training helps ([CLS] head)",
    "C1-cls": "pre-training helps ([CLS] head)",
    "C1-mean": "pre-training helps (mean-pool head)",
    "C2": "gap grows with corpus size (equal tokens)",
    "C2-epochs": "gap grows with corpus size (equal epochs, the paper's design)",
    "C3": "gap grows with token overlap",
    "C4": "committee ≈ deep model",
}


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _lane_time(timings: dict[str, Any]) -> str:
    """The training seconds summed over the runs, when recorded, and the runs copied from other grids."""
    t = timings.get("train_seconds")
    if not t:
        return ""
    reused = timings.get("reused_runs") or {}
    copied = (
        f"; {len(reused)} finished pre-training(s) with the same settings were copied from other grids "
        f"(`--reuse-from`; their training time is not in these numbers): "
        + ", ".join(f"`{i}` from {src}" for i, src in sorted(reused.items()))
        if reused
        else ""
    )
    cpu = (
        f"; their CPU time (evaluations included; pauses and waiting for a core are not): pre-training "
        f"{t['pretrain_cpu'] / 60:.0f} min over {t['pretrain_cpu_runs']} run(s), fine-tuning "
        f"{t['finetune_cpu'] / 60:.0f} min over {t['finetune_cpu_runs']} run(s)"
        if t.get("pretrain_cpu_runs") or t.get("finetune_cpu_runs")
        else ""
    )
    return (
        f"; training time summed over the runs: pre-training {t['pretrain'] / 60:.0f} min, fine-tuning "
        f"{t['finetune'] / 60:.0f} min (lane time, evaluations excluded){cpu}{copied}"
    )


def _header(p: Preset, r: dict[str, Any], timings: dict[str, Any], counts: dict[str, int]) -> list[str]:
    m = timings["machine"]
    jobs = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    L = [
        f"# tinylm reproduction report — preset `{p.name}`",
        "",
        f"*{p.description.strip()}*",
        "",
        "Reproduction of *Tiny language models* (Gross, Tzach, Halevi, Koresh, Kanter, arXiv 2507.14871).",
        f"{sum(counts.values())} jobs ({jobs}), tasks {', '.join(r['tasks'])}, {r['seeds']} fine-tuning "
        f"seed(s), "
        f"device {m['device']} ({m['cpus']} CPUs: {m.get('cpu', '?')}), torch {m['torch']}, "
        f"wall time {timings['wall_seconds'] / 60:.1f} min (all invocations of this grid, "
        f"OUT/invocations.json){_lane_time(timings)}.",
        "",
        "## Verdicts",
        "",
        f"Adequacy gate: a claim is judged only when every pre-trained model it uses has a held-out MLM "
        f"loss at "
        f"least **{p.gate_nats} nats** below the unigram baseline of the same masked tokens; otherwise it is "
        "*not tested* (numbers in the gate table below).",
        "",
        "| claim | verdict | test that decided | p | effect (pp) | gate |",
        "|---|---|---|---|---|---|",
    ]
    for c, d in r["decisions"].items():
        gate = f"failed: {len(d['gate_failed'])} model(s)" if d.get("gate_failed") else "passed"
        L.append(
            f"| {c} {CLAIMS[c]} | **{d['verdict']}** | {d['test']} | {_p(d['p'])} | "
            f"{_fmt(d['effect_pp'], '+.2f')} | {gate} |"
        )
    L += [
        "",
        f"Rule for C1–C3 (symmetric, α = {ALPHA}): *holds* when the mean effect is > 0 with one-sided p(> "
        f"0) < α "
        "and every task's mean is > 0; *does not hold* when the mean is < 0 with one-sided p(< 0) < α and "
        "every "
        "task's mean is < 0; else *inconclusive*. C4 is non-inferiority with a margin: *holds* when every "
        f"task's paired 95% CI of committee − deep lies above −{p.c4_margin_pp} pp, *does not hold* when one "
        "lies below it, else *inconclusive*.",
        "",
        f"Accuracy used everywhere: **{r['accuracy_used']}**.",
        "",
    ]
    return L + _gate(r)


def _gate_row(m: dict[str, Any], roles: str, passed: str) -> str:
    """A gate-table row: a model's (or an attempt set aside's) run, roles, tokens and losses."""
    loss, uni = m["mlm_loss"], m["unigram_loss"]
    gap = None if loss is None or uni is None else uni - loss
    return (
        f"| {m['run']} | {roles} | {_fmt(m['tokens'], ',')} | {_fmt(loss, '.3f')} | "
        f"{_fmt(uni, '.3f')} | {_fmt(gap, '.2f')} | {passed} |"
    )


def _gate(r: dict[str, Any]) -> list[str]:
    g = r["gate"]
    L = [
        "### Pre-training adequacy gate",
        "",
        "| run | role | tokens seen | held-out MLM loss | unigram baseline | "
        "below baseline (nats) | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in g["models"]:
        roles = " = ".join(str(r) for r in [m["role"], *m.get("also", [])])  # one run, every role it serves
        L.append(_gate_row(m, roles, "yes" if m["passed"] else "**no**"))
        L += [
            _gate_row(a, f"{roles}, seed {a['seed']}", "no: *set aside*, re-seeded")
            for a in m.get("set_aside", [])
        ]
    if any(m.get("set_aside") for m in g["models"]):
        L += [
            "",
            "*Set aside*: a committee member that ended below the gate was pre-trained again with the next "
            "seed (`member_reseeds`); the row above it is the attempt kept, and the run set aside stays in "
            "OUT/runs/ID.below-gate/. Members are chosen on their held-out MLM loss alone, never on a "
            "downstream accuracy.",
        ]
    if not all(m["passed"] for m in g["models"]):
        L += [
            "",
            "Models below the gate have not left the unigram stage far enough for a verdict on what "
            "pre-training buys: give them a longer pre-training (more training tokens; at a fixed budget, "
            "more epochs over the same articles and more distinct articles ended at the same held-out "
            "loss here: benchmarks/README.md) and rerun.",
        ]
    return L + [""]


def _head_table(head: dict[str, Any]) -> list[str]:
    L = [
        "| task | pre-trained acc % (mean ± std) | scratch acc % | gap pp (mean ± std) | gap per "
        "pre-training replicate (pp) | chosen lr (pre-trained / scratch) |",
        "|---|---|---|---|---|---|",
    ]
    for t, d in head["tasks"].items():
        (pm, ps), (sm, ss), (gm, gs) = mean_std(d["pretrained"]), mean_std(d["scratch"]), mean_std(d["gaps"])
        reps = ", ".join(f"{100 * g:+.2f}" for g in d["replicate_gaps"])
        lrs = "; ".join(f"{a:g} / {b:g}" for a, b in d.get("lrs", []) if a is not None and b is not None)
        L.append(
            f"| {t} | {100 * pm:.2f} ± {100 * ps:.2f} | {100 * sm:.2f} ± {100 * ss:.2f} | {100 * gm:+.2f} ± "
            f"{100 * gs:.2f} | {reps} | {lrs or '–'} |"
        )
    pt, dec = head["pooled_test"], head["decision"]
    return L + [
        "",
        f"Mean gap {100 * pt['mean']:+.2f} pp ({dec['test']}; n = {pt['n']}"
        + (f", df = {pt['df']}" if "df" in pt else "")
        + f"), one-sided p = {_p(dec['p'])}. Verdict before the gate: **{dec['verdict']}**.",
        "",
    ]


def _c1(p: Preset, r: dict[str, Any]) -> list[str]:
    e1 = r["E1"]
    reps = p.pretrain_seeds
    L = [
        "## C1 — pre-training vs from scratch (E1)",
        "",
        f"Deep model {p.deep}, pre-trained on {e1['corpus_size']:,} articles "
        f"({_budget(p)}; {reps} independent "
        f"pre-training run(s), seeds 0..{reps - 1}: the replication unit); replicate k fine-tunes both arms "
        f"with its own {r['seeds']} seed(s). The control is the same architecture from random init.",
        "",
    ]
    for pl, head in e1["heads"].items():
        name = "[CLS] + pooler (the paper's head)" if pl == "cls" else "mean of token states + pooler"
        L += [f"### Head: {name}", ""] + _head_table(head)
    mlm = r["E2"].get("pretraining_mlm", {})
    done = sorted(((int(n), d) for n, d in mlm.items() if d["mlm_loss"] is not None), key=lambda x: x[0])
    L += ["![E1](figures/e1_accuracy_per_epoch.png)", ""]
    if done:
        L += [
            "Held-out MLM of the deep models C2 compares (mean over each size's pre-training replicates; "
            "articles: loss / accuracy; "
            "unigram baseline in the gate table): "
            + "; ".join(f"{n:,}: {d['mlm_loss']:.3f} / {100 * d['mlm_accuracy']:.1f}%" for n, d in done)
            + ".",
            "",
        ]
    return L


def _budget(p: Preset) -> str:
    t = p.pretrain.get("max_tokens")
    return f"{t:,} training tokens" if t else f"{p.pretrain.get('epochs')} epochs"


def _gap_cell(row: dict[str, Any]) -> str:
    """An E0 gap: the mean over fine-tuning seeds, with its std where there are several."""
    per_seed = row.get("gap_pp_per_seed") or [row["gap_pp"]]
    return f"{row['gap_pp']:+.2f}" + (f" ± {np.std(per_seed, ddof=1):.2f}" if len(per_seed) > 1 else "")


def _e0(p: Preset, r: dict[str, Any]) -> list[str]:
    rows = r.get("E0") or []
    if not rows:
        return []
    L = [
        "## E0 — gap vs pre-training budget (beyond the paper)",
        "",
        f"Snapshots of the first deep pre-training run (seed 0) at 0 tokens (the initial model) and "
        "budget/2^k tokens, and the finished run; each fine-tuned with seed(s) 0 … "
        f"{rows[0].get('seeds', 1) - 1} at lr {p.finetune.get('lr')} (no lr sweep), gap against the scratch "
        "run with the same seed, lr and head; mean over the seeds (± std where there are several).",
        "",
        "| tokens seen | held-out MLM − unigram (nats) | "
        + " | ".join(f"{t} {pl} gap pp" for t, pl in dict.fromkeys((x["task"], x["pooling"]) for x in rows))
        + " |",
        "|---|---|" + "---|" * len(dict.fromkeys((x["task"], x["pooling"]) for x in rows)),
    ]
    for tokens in sorted({x["tokens"] for x in rows}):
        at = [x for x in rows if x["tokens"] == tokens]
        d = at[0]["mlm_loss"] - at[0]["unigram_loss"] if at[0]["mlm_loss"] is not None else None
        L.append(f"| {tokens:,} | {_fmt(d, '+.2f')} | " + " | ".join(_gap_cell(x) for x in at) + " |")
    return L + ["", "![E0](figures/e0_gap_vs_tokens.png)", ""]


def _replicates(e2: dict[str, Any]) -> int:
    """Pre-trainings per corpus size in C2 (the fewest over the sizes)."""
    return min((int(d.get("n", 1)) for d in e2.get("pretraining_mlm", {}).values()), default=1)


def _c2(r: dict[str, Any]) -> list[str]:
    """C2 under the equal-token design, and under the paper's equal-epoch design where it ran."""
    L = _c2_design(r["E2"], r["verdicts"]["C2"], "C2", "![E2](figures/e2_gap_vs_size.png)")
    if "E2-epochs" in r:
        L += _c2_design(r["E2-epochs"], r["verdicts"]["C2-epochs"], "C2-epochs", None)
    return L


def _c2_design(e2: dict[str, Any], verdict: str, claim: str, figure: str | None) -> list[str]:
    title = (
        "## C2 — gap vs pre-training corpus size (E2)"
        if claim == "C2"
        else "### C2-epochs: the paper's design"
    )
    note = e2.get("design_note", "equal training tokens: the sizes differ in diversity only")
    if "pooled_test" not in e2:
        return [title, "", f"Not run: {e2['decision']['test']}.", ""]
    L = [
        title,
        "",
        f"Design: {note} (verdict {claim}). Nested subsets (each the first N of one article order), "
        f"{_replicates(e2)} pre-training(s) per size (seeds 0 … {_replicates(e2) - 1}; replicate r of every "
        "size is fine-tuned with the same seeds); a gap is pre-trained − scratch per (replicate, fine-tuning "
        "seed), shown as mean ± std where there are several; one slope per (task, replicate, seed).",
        "",
        "| task | "
        + " | ".join(f"gap pp @ {n:,}" for n in e2["sizes"])
        + " | slope pp/decade (mean) | p (one-sided) |",
        "|---|" + "---|" * (len(e2["sizes"]) + 2),
    ]
    for t, d in e2["tasks"].items():
        cells = " | ".join(
            f"{100 * m:+.2f}" + (f" ± {100 * s:.2f}" if k > 1 else "")  # one gap has no spread to show
            for m, s, k in zip(d["gap_mean"], d["gap_std"], d["gap_n"], strict=True)
        )
        L.append(
            f"| {t} | {cells} | {100 * np.mean(d['slope_per_decade']):+.2f} | {_p(d['test']['p_greater'])} |"
        )
    pt = e2["pooled_test"]
    return L + [
        "",
        _c2_budgets(e2),
        "",
        f"Pooled slope {100 * pt['mean']:+.2f} pp per decade of articles, n = {pt['n']}, one-sided p = "
        f"{_p(pt['p_greater'])}. Verdict: **{verdict}**.",
        "",
        *([figure, ""] if figure else []),
    ]


def _c2_budgets(e2: dict[str, Any]) -> str:
    """What each size's pre-trainings ran: epochs over its subset and held-out MLM loss (replicate mean)."""
    mlm = e2.get("pretraining_mlm", {})
    cells = []
    for n in e2["sizes"]:
        d = mlm.get(str(n), {})
        ep = f"{d['epochs']:.2f} epochs" if d.get("epochs") is not None else "epochs unknown"
        loss = f", held-out MLM {d['mlm_loss']:.3f}" if d.get("mlm_loss") is not None else ""
        if loss and d.get("unigram_loss") is not None:
            loss += f" ({d['unigram_loss'] - d['mlm_loss']:.2f} nats below unigram)"
        cells.append(f"{n:,} articles: {ep}{loss}")
    text = "Pre-training per size (mean over replicates): " + "; ".join(cells) + "."
    if e2.get("design") == "epochs":
        text += (
            " Equal epochs give a smaller subset fewer tokens, so its model may stay nearer the unigram "
            "plateau by design: the adequacy gate holds the main corpus size's arm (and larger ones), and a "
            "smaller arm's gap partly measures its shorter training, which the equal-token design above "
            "separates out."
        )
    return text


def _c3_controlled(c: dict[str, Any], verdict: str) -> list[str]:
    L = [
        f"**Controlled test** on {c['task']}: two corpora of {c['num_articles']:,} full-length articles "
        f"from a pool of "
        f"{c['pool']:,}, chosen for the highest / lowest overlap, pre-trained and fine-tuned identically.",
        "",
        "| corpus | selection score (mean share of tokens in the task's vocabulary) | occurrence coverage | "
        "coverage@5 | "
        "JS similarity | fine-tuned acc % |",
        "|---|---|---|---|---|---|",
    ]
    for d in ("high", "low"):
        m_, s_ = mean_std(c[d])
        sel = c["selection"][d]
        ov = sel["achieved_overlap_train"]
        L.append(
            f"| {d} | {sel['mean_score']:.4f} | {ov['occurrence_coverage']:.4f} | {ov['coverage@5']:.4f} | "
            f"{ov['js_similarity']:.4f} | {100 * m_:.2f} ± {100 * s_:.2f} |"
        )
    tt = c["test"]
    return L + [
        "",
        f"Difference high − low: {100 * tt['mean']:+.2f} pp (n = {tt['n']}: {c.get('pretraining_seeds', 1)} "
        f"pre-training replicate(s) of each corpus × fine-tuning seeds; one-sided p = "
        f"{_p(tt['p_greater'])}). Verdict: **{verdict}**.",
        "",
    ]


E3_POINTS = (
    "the nested sizes' and, where run, the controlled corpora's overlap with the task's training samples"
)


def metric_correlation_lines(mc: dict[str, Any] | None, points: str = E3_POINTS) -> list[str]:
    """Which overlap metric predicts the gap: Pearson r, p and n of each over the (task, corpus) points."""
    if not mc or mc["best"] is None:
        return []
    L = [
        f"Which overlap metric predicts the gap: Pearson correlation of each metric with the mean gap over "
        f"n = {mc['n']} (task, corpus) points (corpora {', '.join(mc['corpora'])}; {points}; two-sided p; "
        "descriptive, the points are not independent replicates):",
        "",
        "| metric | Pearson r | p |",
        "|---|---|---|",
    ]
    for m, v in mc["metrics"].items():
        cells = ("–", "–") if v is None else (f"{v['r']:+.3f}", _p(v["p"]))
        L.append(f"| {m} | {cells[0]} | {cells[1]} |")
    best = mc["metrics"][mc["best"]]
    return L + ["", f"Best predictor here: **{mc['best']}** (r = {best['r']:+.3f}, p = {_p(best['p'])}).", ""]


def _c3(p: Preset, r: dict[str, Any]) -> list[str]:
    e3 = r["E3"]
    if "gap_mean" not in (e3["rows"] or [{}])[0] and not e3.get("controlled"):
        return ["## C3 — gap vs token overlap (E3)", "", f"Not run: {e3['decision']['test']}.", ""]
    L = [
        "## C3 — gap vs token overlap (E3)",
        "",
        "Overlap of each corpus with each task's training samples (WordPiece ids, special tokens excluded; "
        "definitions in `tinylm overlap --help`):",
        "",
        "| corpus | task | type coverage | occurrence coverage | coverage@5 | coverage@20 | JS similarity | "
        "weighted overlap | gap pp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in e3["rows"]:
        L.append(
            f"| {row['corpus']} | {row['task']} | {row['type_coverage']:.4f} | "
            f"{row['occurrence_coverage']:.4f} | "
            f"{row['coverage@5']:.4f} | {row['coverage@20']:.4f} | {row['js_similarity']:.4f} | "
            f"{row['weighted_overlap']:.4f} | "
            f"{_fmt(100 * row['gap_mean'] if 'gap_mean' in row else None, '+.2f')} |"
        )
    corr = e3["pearson_gap_vs_overlap"]
    L += [
        "",
        f"Pearson correlation of the mean gap with {e3['metric_for_plot']} across (task, size): "
        f"{'–' if corr is None else f'{corr:+.3f}'} (descriptive: sizes and tasks are confounded with "
        f"overlap).",
        "",
    ] + metric_correlation_lines(e3.get("metric_correlations"))
    if e3.get("controlled"):
        L += _c3_controlled(e3["controlled"], r["verdicts"]["C3"])
    else:
        L += [
            f"The controlled test ({e3['decision']['test']}) did not run: verdict **{r['verdicts']['C3']}**.",
            "",
        ]
    return L + ["![E3](figures/e3_gap_vs_overlap.png)", ""]


def _budget_overrides(p: Preset) -> str:
    """The pre-training settings that the committee members and the controlled corpora change."""
    out = ""
    for who, over, why in (
        ("committee members", p.member_pretrain, "training FLOPs in C4's table"),
        ("controlled corpora", p.controlled_pretrain, "full-length articles: fewer steps per token"),
    ):
        if over:
            changes = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in over.items())
            out += f" The {who} are pre-trained with {changes} ({why})."
    return out


def _c4_cost(e4: dict[str, Any], latency: dict[str, Any]) -> list[str]:
    """What each side of C4 costs: training FLOPs of its models (all members for the committee) and, for
    these very models on this machine, the forward FLOPs and measured latency of one input."""
    rows = [(t, d) for t, d in e4["tasks"].items() if "cost" in d]
    if not rows:
        return []
    L = [
        "Cost of each side (training: pre-training + fine-tuning, all members summed; latency: these models, "
        "batch 1, full-length input, fp32, median of 20 calls on this machine):",
        "",
        "| task | side | pre-training tokens | training PFLOP | forward MFLOP per input | ms per input |",
        "|---|---|---|---|---|---|",
    ]
    for t, d in rows:
        lat = latency.get(t, {})
        for side, who in (("committee", "committee"), ("deep model", "reference")):
            c, key = d["cost"][who], f"{who}_ms"
            pf = (c["pretrain_flops"] + c["finetune_flops"]) / 1e15
            ms = f"{lat[key]:.2f}" if key in lat else "–"
            L.append(
                f"| {t} | {side} | {c['pretrain_tokens'] / 1e6:.1f} M | {pf:.3f} | "
                f"{c['inference_flops'] / 1e6:,.0f} | {ms} |"
            )
    return L + ["", *_c4_cost_ratio(rows, latency)]


def _c4_cost_ratio(rows: list[tuple[str, dict[str, Any]]], latency: dict[str, Any]) -> list[str]:
    """One sentence: what the committee costs per unit the deep model costs (C4's verdict is on accuracy)."""
    ratios: dict[str, list[float]] = {"training FLOPs": [], "forward FLOPs": [], "latency": []}
    for t, d in rows:
        c, r = d["cost"]["committee"], d["cost"]["reference"]
        train = [x["pretrain_flops"] + x["finetune_flops"] for x in (c, r)]
        ratios["training FLOPs"].append(train[0] / train[1])
        ratios["forward FLOPs"].append(c["inference_flops"] / r["inference_flops"])
        if "committee_ms" in latency.get(t, {}):
            ratios["latency"].append(latency[t]["committee_ms"] / latency[t]["reference_ms"])
    spans = {
        name: sorted({f"{x:.1f}" for x in (min(v), max(v))}, key=float) for name, v in ratios.items() if v
    }
    parts = [f"{'–'.join(span)}× {name}" for name, span in spans.items()]
    timed = next((latency[t] for t, _ in rows if "committee_plan" in latency.get(t, {})), None)
    how = f" ({timed['threads']} thread(s); {timed['committee_plan']})" if timed else ""
    return [
        f"Committee ÷ deep model over the tasks: {', '.join(parts)}{how}. C4's verdict judges accuracy "
        "only; whether the committee is also cheaper is read from these ratios and the latency table below.",
        "",
    ]


def _c4(p: Preset, r: dict[str, Any], timings: dict[str, Any]) -> list[str]:
    e4 = r["E4"]
    L = [
        "## C4 — soft committee of shallow models vs the deep model (E4)",
        "",
        f"{e4['members']} shallow members, each pre-trained independently (seeds 0..{e4['members'] - 1}) on "
        f"{p.main_corpus:,} "
        "articles and fine-tuned per task; soft committee = argmax of the mean softmax. Reference: the deep "
        "model pre-trained "
        "on the same corpus.",
        "",
        "| task | members' acc % (each) | committee of K % | mean over orderings at K % | deep model % | "
        "difference pp | paired 95% CI (pp) | McNemar p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, d in e4["tasks"].items():
        each = ", ".join(f"{100 * m['accuracy']:.1f} ({m['model']})" for m in d["members"])
        lo, hi = d["paired"]["ci95_pp"]
        L.append(
            f"| {t} | {each} | {100 * d['committee_accuracy']:.2f} | {100 * d['curve']['mean'][-1]:.2f} | "
            f"{100 * d['reference']['accuracy']:.2f} | {100 * d['difference']:+.2f} | [{lo:+.2f}, "
            f"{hi:+.2f}] | "
            f"{_p(d['paired']['mcnemar_p'])} |"
        )
    L += ["", f"Non-inferiority margin {e4['margin_pp']} pp. Verdict: **{r['verdicts']['C4']}**.", ""]
    L += _c4_cost(e4, timings.get("committee_latency", {}))
    L += [f"![E4 {t}](figures/e4_committee_{t}.png)" for t in e4["tasks"]]
    L += [
        "",
        "Latency on this machine (sequence 128; committee members = BERT-1 768/12; random weights):",
        "",
        "| model | mode | k | batch | precision | ms per input | critical path |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in timings["latency"]["rows"]:
        L.append(
            f"| {row['model']} | {row['mode']} | {row['k']} | {row['batch']} | {row['precision']} | "
            f"{row['ms_per_input']} | {row['critical_path']} |"
        )
    return L + ["", "![latency](figures/e4_latency.png)", ""]


def render(
    p: Preset,
    r: dict[str, Any],
    timings: dict[str, Any],
    counts: dict[str, int],
    extra: list[str] | None = None,
) -> str:
    """The whole report.md (`extra`: sections after C4's, e.g. the future work's)."""
    L = _header(p, r, timings, counts) + _c1(p, r) + _e0(p, r) + _c2(r) + _c3(p, r) + _c4(p, r, timings)
    L += extra or []
    L += ["## Deviations from the paper", ""] + [f"- {d}" for d in deviations(p, r["tasks"], r["seeds"])]
    L += ["", "## Preset", "", "```yaml", yaml.safe_dump(p.as_dict(), sort_keys=False).strip(), "```", ""]
    return "\n".join(L)
