"""The benchmark: every method on the held-out prompts, as ratios within one run.

    python -m minispec bench --methods ar,sps,pld --out results/

Methods take turns prompt by prompt (so drift of the machine hits all of them alike), after
one untimed warm-up generation each. Writes DIR/summary.json (per method and domain:
tokens_per_s, speedup over `ar` of the same run, mean_acceptance_length tau,
acceptance_per_pos, lossless) and DIR/answers/<method>.jsonl in Spec-Bench's answer format.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from .data import DOMAINS, load_prompts
from .generation import METHODS, generate
from .stats import GenerationStats


def run_bench(target, tokenizer, methods, drafters=None, method_options=None, domains=None,
              limit: int | None = None, max_new_tokens: int = 128, temperature: float = 0.0,
              top_k: int = 0, top_p: float = 1.0, seed: int = 0, out_dir=None, progress=True) -> dict:
    """Run the benchmark; return the summary (and write it when out_dir is given).

    drafters:       method -> drafter object (e.g. {"sps": draft_model})
    method_options: method -> extra options for generate (e.g. {"sps": {"gamma": 4}})
    """
    from tqdm.auto import tqdm
    methods = list(dict.fromkeys(["ar", *methods]))  # ar is the baseline of every ratio
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {METHODS}")
    drafters, method_options = drafters or {}, method_options or {}
    questions = load_prompts(domains=domains, limit=limit)
    if not questions:
        raise ValueError("no prompts selected")
    eos = tokenizer.eot_id

    def run(method, ids, seed):
        return generate(target, ids, max_new_tokens, temperature, top_k, top_p, seed=seed, eos_id=eos,
                        method=method, drafter=drafters.get(method), **method_options.get(method, {}))

    first = tokenizer.encode(questions[0]["turns"][0])
    for m in methods:  # warm-up: first calls pay for allocation and kernel selection
        run(m, first, seed)
    totals = {m: {d: GenerationStats() for d in DOMAINS} for m in methods}
    answers = {m: [] for m in methods}
    outputs = {m: {} for m in methods}
    for q in tqdm(questions, desc="bench", disable=not progress):
        ids = tokenizer.encode(q["turns"][0])
        for m in methods:
            g = run(m, ids, seed + q["question_id"])
            totals[m][q["category"]] = totals[m][q["category"]].merge(g.stats)
            outputs[m][q["question_id"]] = g.tokens
            answers[m].append({"question_id": q["question_id"], "category": q["category"], "model_id": m,
                               "choices": [{"index": 0, "turns": [tokenizer.decode(g.tokens)],
                                            "new_tokens": [g.stats.new_tokens],
                                            "wall_time": [round(g.stats.wall_time, 5)],
                                            "accept_lengths": [g.stats.accept_lengths]}],
                               "tstamp": time.time()})
    used = [d for d in DOMAINS if any(q["category"] == d for q in questions)]
    summary = {"device": str(target.device), "torch": torch.__version__, "python": platform.python_version(),
               "temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens,
               "seed": seed, "prompts_per_domain": {d: sum(q["category"] == d for q in questions) for d in used},
               "method_options": method_options, "methods": {}}
    for m in methods:
        per = {}
        for d in used + ["all"]:
            st = totals[m][d] if d != "all" else _sum(totals[m][x] for x in used)
            base = totals["ar"][d] if d != "all" else _sum(totals["ar"][x] for x in used)
            qids = [q["question_id"] for q in questions if d == "all" or q["category"] == d]
            lossless = None if temperature > 0 else all(outputs[m][i] == outputs["ar"][i] for i in qids)
            per[d] = {"tokens_per_s": round(st.tokens_per_s, 2),
                      "speedup": round(st.tokens_per_s / base.tokens_per_s, 3) if base.tokens_per_s else None,
                      "mean_acceptance_length": round(st.mean_acceptance_length, 3),
                      "acceptance_per_pos": [round(a, 4) for a in st.acceptance_per_pos],
                      "acceptance_rate": round(st.acceptance_rate, 4),
                      "lossless": lossless, "new_tokens": st.new_tokens, "wall_time": round(st.wall_time, 3),
                      "target_calls": st.target_calls, "steps": len(st.accept_lengths),
                      "time_split": {k: round(v, 4) for k, v in (
                          ("prefill", st.prefill_time), ("draft", st.draft_time), ("target", st.target_time),
                          ("verify", st.verify_time), ("bookkeeping", st.bookkeeping_time))}}
        summary["methods"][m] = per
    if out_dir is not None:
        out_dir = Path(out_dir)
        (out_dir / "answers").mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        for m in methods:
            with open(out_dir / "answers" / f"{m}.jsonl", "w", encoding="utf-8") as f:
                for a in answers[m]:
                    f.write(json.dumps(a) + "\n")
    return summary


def _sum(stats) -> GenerationStats:
    total = GenerationStats()
    for s in stats:
        total = total.merge(s)
    return total


def format_summary(summary: dict) -> str:
    """A plain-text table of the summary."""
    lines = [f"device {summary['device']}, torch {summary['torch']}, temperature {summary['temperature']}, "
             f"max_new_tokens {summary['max_new_tokens']}",
             f"{'method':8s} {'domain':12s} {'tok/s':>8s} {'speedup':>8s} {'tau':>6s} {'lossless':>9s}"]
    for m, per in summary["methods"].items():
        for d, r in per.items():
            lines.append(f"{m:8s} {d:12s} {r['tokens_per_s']:8.1f} {r['speedup'] or 0:8.2f} "
                         f"{r['mean_acceptance_length']:6.2f} {str(r['lossless']):>9s}")
    return "\n".join(lines)


def gamma_sweep(target, tokenizer, methods, gammas, drafters=None, out_path=None, cost_repeats: int = 30,
                **bench_kwargs) -> dict:
    """Run the benchmark once per gamma (each run with its own `ar` baseline), and measure what
    the cost models of `minispec.costs` need: c (draft step / target step) and the target's
    forward cost T(n) for n = 1 .. max(gammas) + 1, with `cost_repeats` repeats.

    Returns {"gammas", "methods", "cost_ratio_c", "target_cost", "runs": {gamma: summary}},
    written as JSON to out_path if given.
    """
    from .costs import cost_curve, cost_ratio
    runs = {}
    c = cost_ratio(drafters["sps"], target, cost_repeats) if drafters and "sps" in drafters else None
    curve = cost_curve(target, range(1, max(gammas) + 2), repeats=cost_repeats)
    for g in gammas:
        runs[g] = run_bench(target, tokenizer, methods, drafters=drafters,
                            method_options={m: {"gamma": g} for m in methods if m != "ar"}, **bench_kwargs)
    result = {"gammas": list(gammas), "methods": list(methods), "cost_ratio_c": c, "target_cost": curve,
              "runs": runs}
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(result, indent=1) + "\n")
    return result
