"""The benchmark: every method on the held-out prompts, as ratios within one run.

    python -m minispec bench --methods ar,sps,pld --out results/

Methods take turns prompt by prompt (so drift of the machine hits all of them alike), after
one untimed warm-up generation each; with `--repeats N` every generation is timed N times and
each prompt counts with its median. Every timed call decodes with minispec.device.inference_threads
(1 CPU thread unless $MINISPEC_THREADS says otherwise). The summary records the thread settings and the load
average, and warns when another process was loading the machine. Writes DIR/summary.json (per method and domain:
tokens_per_s, speedup over `ar` of the same run, mean_acceptance_length tau,
acceptance_per_pos, lossless) and DIR/answers/<method>.jsonl in Spec-Bench's answer format.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from .data import DOMAINS, load_prompts
from .device import inference_threads
from .generation import generate
from .methods import get_method
from .stats import GenerationStats


def base_method(label: str) -> str:
    """A benchmarked method may be a variant, METHOD@NAME (e.g. eagle1-tree@t8 with its own
    options), so that several settings of one method share one run and one baseline."""
    return label.split("@", 1)[0]


def run_bench(target, tokenizer, methods, drafts=None, method_options=None, domains=None,
              limit: int | None = None, max_new_tokens: int = 128, temperature: float = 0.0,
              top_k: int = 0, top_p: float = 1.0, seed: int = 0, repeats: int = 1, out_dir=None,
              progress=True, cost_curve_max: int = 0, oracle: bool = False, peers=None,
              command: str | None = None) -> dict:
    """Run the benchmark; return the summary (and write it when out_dir is given).

    drafts:         method -> its draft model (e.g. {"sps": minispec.load_draft()})
    method_options: method -> extra options for generate (e.g. {"sps": {"gamma": 4}}); a method
                    may be a variant METHOD@NAME with options of its own
    cost_curve_max: also measure the target's forward cost T(n), n = 1..cost_curve_max, after the
                    generations (what verifying a chain or tree of n - 1 drafts costs), and add
                    the cost model's predicted speedup to every row (`add_predictions`)
    oracle:         also run the oracle (method "oracle": the target's own greedy continuation,
                    drafted at no cost) at every method's budget (the most nodes its rounds draft),
                    and report each method's speedup as a fraction of the oracle's at its budget
                    ("oracle_fraction"): how much of what verification allows the method reaches
    peers:          a minispec.peers.HFPeers (greedy only): transformers' generate, assisted
                    generation and prompt lookup on the same weights, taking turns with minispec's
                    methods prompt by prompt; every row then also gets "speedup_vs_hf" (over
                    transformers' plain generate), and the peers' settings are recorded
    command:        the command line that ran the benchmark, recorded in the summary
    repeats:        time every generation this many times (same seed, so the same tokens). The
                    headline tokens/s and speedup are those of the median repeat (each repeat's
                    speedup against ar's same repeat), with the range over repeats beside them, so
                    that one noisy repeat cannot mislead; per-prompt answers keep their median run.
    """
    from tqdm.auto import tqdm
    methods = list(dict.fromkeys(["ar", *methods]))  # ar is the baseline of every ratio
    for m in methods:
        get_method(base_method(m))
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    drafts, method_options = drafts or {}, method_options or {}
    questions = load_prompts(domains=domains, limit=limit)
    if not questions:
        raise ValueError("no prompts selected")
    eos = tokenizer.eot_id
    load_before = _load_average()
    first = tokenizer.encode(questions[0]["turns"][0])
    budgets = {}
    oracle_rows = any(base_method(m) == "oracle" for m in methods)   # asked for by name: at its gamma
    if (oracle or oracle_rows) and temperature > 0:
        raise ValueError("the oracle drafts the target's greedy continuation: it is defined at temperature 0")
    if peers is not None and temperature > 0:
        raise ValueError("the peers run greedy: compare them at temperature 0")
    if oracle:
        from .methods import make_drafter
        method_options = dict(method_options)
        for m in methods:
            if get_method(base_method(m)).make_drafter is not None and base_method(m) != "oracle":
                d = make_drafter(base_method(m), target, drafts.get(m, drafts.get(base_method(m))),
                                 len(first) + max_new_tokens, **method_options.get(m, {}))
                budgets[m] = f"oracle@{d.budget}"
                method_options[budgets[m]] = {"gamma": d.budget}
        methods += sorted(set(budgets.values()) - set(methods), key=lambda o: int(o.split("@")[1]))
    peer_names = list(peers.names) if peers is not None else []
    methods += peer_names

    def run(method, ids, seed, plain=None):
        if method in peer_names:
            return peers.generate(method, ids, max_new_tokens)
        draft = drafts.get(method, drafts.get(base_method(method)))
        if base_method(method) == "oracle":     # the text plain decoding produced (ar ran first)
            draft = ids + plain
        return generate(target, ids, max_new_tokens, temperature, top_k, top_p, seed=seed, eos_id=eos,
                        method=base_method(method), draft=draft, **method_options.get(method, {}))

    plain_first = run("ar", first, seed).tokens if budgets or oracle_rows else None  # the oracle's warm-up text
    for m in methods:  # warm-up: first calls pay for allocation and kernel selection
        run(m, first, seed, plain_first)
    totals = {m: {d: GenerationStats() for d in DOMAINS} for m in methods}
    walls = {m: {d: [0.0] * repeats for d in DOMAINS} for m in methods}  # [r]: wall time of repeat r
    answers = {m: [] for m in methods}
    outputs = {m: {} for m in methods}
    for q in tqdm(questions, desc="bench", disable=not progress):
        ids, d = tokenizer.encode(q["turns"][0]), q["category"]
        gens = {m: [] for m in methods}
        for _ in range(repeats):          # methods take turns within each repeat
            for m in methods:
                gens[m].append(run(m, ids, seed + q["question_id"], gens["ar"][-1].tokens if gens["ar"] else None))
        for m in methods:
            for r, gr in enumerate(gens[m]):
                walls[m][d][r] += gr.stats.wall_time
            g = sorted(gens[m], key=lambda gr: gr.stats.wall_time)[(repeats - 1) // 2]  # the median run
            totals[m][d] = totals[m][d].merge(g.stats)
            outputs[m][q["question_id"]] = g.tokens
            answers[m].append({"question_id": q["question_id"], "category": d, "model_id": m,
                               "choices": [{"index": 0, "turns": [tokenizer.decode(g.tokens)],
                                            "new_tokens": [g.stats.new_tokens],
                                            "wall_time": [round(g.stats.wall_time, 5)],
                                            "accept_lengths": [g.stats.accept_lengths]}],
                               "tstamp": time.time()})
    used = [d for d in DOMAINS if any(q["category"] == d for q in questions)]
    load_after = _load_average()
    threads = inference_threads(target.device) or torch.get_num_threads()  # what every timed call used
    summary = {**({"command": command} if command else {}), "device": str(target.device), "torch": torch.__version__, "python": platform.python_version(),
               "threads": threads, "interop_threads": torch.get_num_interop_threads(),
               "cpu_count": os.cpu_count(), "load_average": [load_before, load_after],
               "temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens,
               "seed": seed, "repeats": repeats,
               "prompts_per_domain": {d: sum(q["category"] == d for q in questions) for d in used},
               "method_options": method_options, "methods": {}}
    # the benchmark itself adds about `threads` to the load: more than that means a competitor
    if load_after > min(threads, os.cpu_count() or 1) + 0.5:
        warnings.warn(f"the machine was busy during the benchmark (load average {load_after:.1f} with "
                      f"{threads} thread(s) of ours on {os.cpu_count()} cores): timings are not "
                      "trustworthy; tau and lossless are")
    for m in methods:
        per = {}
        for d in used + ["all"]:
            ds = used if d == "all" else [d]
            st, base = _sum(totals[m][x] for x in ds), _sum(totals["ar"][x] for x in ds)
            # tokens/s of each repeat, and its speedup over ar's same repeat: the spread
            tps_r = [st.new_tokens / sum(walls[m][x][r] for x in ds) for r in range(repeats)]
            base_r = [base.new_tokens / sum(walls["ar"][x][r] for x in ds) for r in range(repeats)]
            spd_r = [a / b for a, b in zip(tps_r, base_r)]
            qids = [q["question_id"] for q in questions if q["category"] in ds]
            lossless = None if temperature > 0 else all(outputs[m][i] == outputs["ar"][i] for i in qids)
            # headline: the median repeat (each repeat's speedup is taken against ar's same repeat)
            per[d] = {"tokens_per_s": round(statistics.median(tps_r), 2),
                      "speedup": round(statistics.median(spd_r), 3),
                      "tokens_per_s_range": [round(min(tps_r), 2), round(max(tps_r), 2)],
                      "speedup_range": [round(min(spd_r), 3), round(max(spd_r), 3)],
                      "mean_acceptance_length": round(st.mean_acceptance_length, 3),
                      "acceptance_per_pos": [round(a, 4) for a in st.acceptance_per_pos],
                      "acceptance_rate": round(st.acceptance_rate, 4), "drafted_tokens": st.num_draft_tokens,
                      "lossless": lossless, "new_tokens": st.new_tokens, "wall_time": round(st.wall_time, 3),
                      "target_calls": st.target_calls, "steps": len(st.accept_lengths),
                      "time_split": {k: round(v, 4) for k, v in (
                          ("prefill", st.prefill_time), ("draft", st.draft_time), ("target", st.target_time),
                          ("verify", st.verify_time), ("bookkeeping", st.bookkeeping_time))}}
        summary["methods"][m] = per
    if peer_names:
        summary["peers"] = peers.describe()
        for m in methods:
            for d, r in summary["methods"][m].items():
                hf = summary["methods"]["hf"][d]["tokens_per_s"]
                r["speedup_vs_hf"] = round(r["tokens_per_s"] / hf, 3) if hf else None
                if m in peer_names:       # transformers does not report its acceptance
                    r["mean_acceptance_length"] = r["acceptance_rate"] = None
                    r["acceptance_per_pos"] = []
    for m, o in budgets.items():          # the share of the ceiling at the same budget
        for d, r in summary["methods"][m].items():
            ceiling = summary["methods"][o][d]["speedup"]
            r["oracle"], r["oracle_fraction"] = o, round(r["speedup"] / ceiling, 3) if ceiling else None
    if cost_curve_max:
        from .costs import cost_curve
        summary["target_cost"] = cost_curve(target, range(1, cost_curve_max + 1))
        add_predictions(summary)
    if out_dir is not None:
        out_dir = Path(out_dir)
        (out_dir / "answers").mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        for m in methods:
            with open(out_dir / "answers" / f"{m}.jsonl", "w", encoding="utf-8") as f:
                for a in answers[m]:
                    f.write(json.dumps(a) + "\n")
    return summary


def add_predictions(summary: dict) -> None:
    """The cost model's speedup for every method and domain, beside the measured one:
    costs.round_speedup from the tokens per round, the tokens verified per round and the drafting
    time per round (all measured in this run) and the target's cost curve T(n). Sets
    "predicted_speedup" and "prediction_error" ((predicted - measured) / measured), or None where
    a round verified more tokens than the curve covers."""
    from .costs import round_speedup
    cost = summary["target_cost"]
    T = dict(zip(cost["n"], cost["median"]))
    for m, per in summary["methods"].items():
        for r in per.values():
            rounds = r["steps"]
            n = 1 + r["drafted_tokens"] / rounds if rounds else 1
            if not rounds or n > max(T):
                r["predicted_speedup"] = r["prediction_error"] = None
                continue
            p = round_speedup(r["new_tokens"] / rounds, n, r["time_split"]["draft"] / rounds, T)
            r["predicted_speedup"] = round(p, 3)
            r["prediction_error"] = round((p - r["speedup"]) / r["speedup"], 3) if r["speedup"] else None


def _load_average() -> float:
    """The 1-minute load average (0 where the system does not report one)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return 0.0


def _sum(stats) -> GenerationStats:
    total = GenerationStats()
    for s in stats:
        total = total.merge(s)
    return total


def format_summary(summary: dict, markdown: bool = False) -> str:
    """A plain-text (or Markdown) table of the summary, with the speedup's range over repeats
    when there were several."""
    rep = summary.get("repeats", 1)
    head = (f"device {summary['device']}, torch {summary['torch']}, {summary.get('threads', '?')} thread(s), "
            f"temperature {summary['temperature']}, max_new_tokens {summary['max_new_tokens']}"
            + (f", median of {rep} repeats" if rep > 1 else ""))
    fraction = any("oracle_fraction" in r for per in summary["methods"].values() for r in per.values())
    vs_hf = "peers" in summary
    cols = (["method", "domain", "tokens/s", "speedup"] + (["speedup range"] if rep > 1 else [])
            + (["vs hf"] if vs_hf else []) + (["of oracle"] if fraction else []) + ["tau", "lossless"])
    rows = []
    for m, per in summary["methods"].items():
        for d, r in per.items():
            rng = [f"{r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}"] if rep > 1 else []
            frac = [f"{r['oracle_fraction']:.0%} of {r['oracle']}" if r.get("oracle_fraction") is not None else ""] \
                if fraction else []
            hf = [f"{r['speedup_vs_hf']:.2f}x" if r.get("speedup_vs_hf") else "-"] if vs_hf else []
            tau = "-" if r["mean_acceptance_length"] is None else f"{r['mean_acceptance_length']:.2f}"
            rows.append([m, d, f"{r['tokens_per_s']:.1f}", f"{r['speedup'] or 0:.2f}x", *rng, *hf, *frac,
                         tau, str(r["lossless"])])
    if markdown:
        return "\n".join([head + ":", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                         + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
    return "\n".join([head, fmt(cols)] + [fmt(row) for row in rows])


def gamma_sweep(target, tokenizer, methods, gammas, drafts=None, out_path=None, cost_repeats: int = 30,
                **bench_kwargs) -> dict:
    """Run the benchmark once per gamma (each run with its own `ar` baseline), and measure what
    the cost models of `minispec.costs` need: c (draft step / target step) and the target's
    forward cost T(n) for n = 1 .. max(gammas) + 1, with `cost_repeats` repeats.

    Returns {"gammas", "methods", "cost_ratio_c", "target_cost", "runs": {gamma: summary}},
    written as JSON to out_path if given.
    """
    from .costs import cost_curve, cost_ratio
    runs = {}
    c = cost_ratio(drafts["sps"], target, cost_repeats) if drafts and "sps" in drafts else None
    curve = cost_curve(target, range(1, max(gammas) + 2), repeats=cost_repeats)
    for g in gammas:
        runs[g] = run_bench(target, tokenizer, methods, drafts=drafts,
                            method_options={m: {"gamma": g} for m in methods if m != "ar"}, **bench_kwargs)
    result = {"gammas": list(gammas), "methods": list(methods), "cost_ratio_c": c, "target_cost": curve,
              "runs": runs}
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(result, indent=1) + "\n")
    return result
