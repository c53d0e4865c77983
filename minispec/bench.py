"""The benchmark: every method on the held-out prompts, as ratios within one run.

    python -m minispec bench --methods ar,sps,pld --out results/

Methods take turns prompt by prompt (so drift of the machine hits all of them alike), after
one untimed warm-up generation each; with `--repeats N` every generation is timed N times and
each prompt counts with its median. Every timed call decodes with minispec.device.inference_threads
(1 CPU thread unless $MINISPEC_THREADS says otherwise). The summary records the thread settings and the load
average, and warns when another process was loading the machine. Writes DIR/summary.json (per method and domain:
tokens_per_s, speedup over `ar` of the same run, mean_acceptance_length tau,
acceptance_per_pos, lossless) and DIR/answers/<method>.jsonl in Spec-Bench's answer format.
The summary's rows, what goes beside them and the printed table are minispec.report's.
"""
from __future__ import annotations

import json
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import weights_fingerprint
from .data import DOMAINS, load_prompts
from .device import inference_threads
from .generation import generate
from .methods import get_method, make_drafter
from .report import (Timings, add_oracle_fractions, add_peer_columns, add_predictions, add_round_costs,
                     format_summary, load_average, method_rows)
from .suffix import SuffixStore

__all__ = ["base_method", "run_bench", "gamma_sweep", "format_summary", "add_predictions"]


def base_method(label: str) -> str:
    """A benchmarked method may be a variant, METHOD@NAME (e.g. eagle1-tree@t8 with its own
    options), so that several settings of one method share one run and one baseline."""
    return label.split("@", 1)[0]


def run_bench(target, tokenizer, methods, drafts=None, method_options=None, domains=None,
              limit: int | None = None, max_new_tokens: int = 128, temperature: float = 0.0,
              top_k: int = 0, top_p: float = 1.0, seed: int = 0, repeats: int = 1, out_dir=None,
              progress=True, cost_curve_max: int = 0, oracle: bool = False, peers=None,
              command: str | None = None, suffix_store: bool = True) -> dict:
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
    suffix_store:   suffix and hybrid also draft from a store of the outputs of the prompts before
                    the current one in the same pass (never its own; one store per method and
                    repeat, so every repeat starts empty; the order is recorded as prompt_order),
                    SuffixDecoding's global tree as a server fills it. False: the request only
    repeats:        time every generation this many times (same seed, so the same tokens). The
                    headline tokens/s and speedup are those of the median repeat (each repeat's
                    speedup against ar's same repeat), with the range over repeats beside them, so
                    that one noisy repeat cannot mislead; per-prompt answers keep their median run.
    """
    methods, questions = _plan(methods, repeats, domains, limit, temperature, oracle, peers)
    drafts, method_options = drafts or {}, method_options or {}
    load_before = load_average()
    first = tokenizer.encode(questions[0]["turns"][0])
    budgets = {}
    if oracle:
        method_options, budgets = _oracle_budgets(methods, target, drafts, method_options,
                                                  len(first) + max_new_tokens)
        methods += sorted(set(budgets.values()) - set(methods), key=lambda o: int(o.split("@")[1]))
    run = _Runner(target, tokenizer.eot_id, drafts, method_options, max_new_tokens, temperature, top_k, top_p,
                  peers, suffix_store)
    methods += run.peer_names
    timed = _time_all(run, methods, questions, tokenizer, first, seed, repeats, progress)
    summary = _summarize(run, methods, questions, timed, seed, repeats, load_before, command)
    add_oracle_fractions(summary, budgets)
    if cost_curve_max:
        from .costs import cost_curve
        summary["target_cost"] = cost_curve(target, range(1, cost_curve_max + 1))
        add_predictions(summary)
    if out_dir is not None:
        _write(Path(out_dir), summary, timed.answers)
    return summary


def _plan(methods, repeats, domains, limit, temperature, oracle, peers):
    """The benchmarked labels (ar first: the baseline of every ratio) and the prompts, every
    request checked before anything runs."""
    methods = list(dict.fromkeys(["ar", *methods]))
    for m in methods:
        get_method(base_method(m))
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    questions = load_prompts(domains=domains, limit=limit)
    if not questions:
        raise ValueError("no prompts selected")
    oracle_rows = any(base_method(m) == "oracle" for m in methods)   # asked for by name: at its gamma
    if (oracle or oracle_rows) and temperature > 0:
        raise ValueError("the oracle drafts the target's greedy continuation: it is defined at temperature 0")
    if peers is not None and temperature > 0:
        raise ValueError("the peers run greedy: compare them at temperature 0")
    return methods, questions


def _oracle_budgets(methods, target, drafts, method_options, max_len):
    """Every drafting method's budget (the most nodes its rounds draft) as the label of the oracle
    at that budget, oracle@N, and the method options with each such oracle's gamma added."""
    method_options, budgets = dict(method_options), {}
    for m in methods:
        if get_method(base_method(m)).make_drafter is not None and base_method(m) != "oracle":
            d = make_drafter(base_method(m), target, drafts.get(m, drafts.get(base_method(m))),
                             max_len, **method_options.get(m, {}))
            budgets[m] = f"oracle@{d.budget}"
            method_options[budgets[m]] = {"gamma": d.budget}
    return method_options, budgets


@dataclass
class _Runner:
    """One generation by any benchmarked label, minispec's method or a peer, with the run's settings."""
    target: object
    eos_id: int
    drafts: dict
    method_options: dict
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    peers: object = None
    suffix_store: bool = True

    def __post_init__(self):
        self.peer_names = list(self.peers.names) if self.peers is not None else []
        self.stores = {}        # (label, repeat) -> SuffixStore: the outputs of that pass so far

    def __call__(self, method, ids, seed, plain=None, repeat=None):
        if method in self.peer_names:
            return self.peers.generate(method, ids, self.max_new_tokens)
        draft = self.drafts.get(method, self.drafts.get(base_method(method)))
        if base_method(method) == "oracle":     # the text plain decoding produced (ar ran first)
            draft = ids + plain
        store = None
        if self.suffix_store and base_method(method) in ("suffix", "hybrid"):
            depth = self.method_options.get(method, {}).get("max_depth", 24)     # the trie's own depth
            if repeat is None:                  # the warm-up: an empty store of its own, thrown away
                store = SuffixStore(depth)
            else:
                store = self.stores.setdefault((method, repeat), SuffixStore(depth))
            draft = store if base_method(method) == "suffix" else (draft, store)
        gen = generate(self.target, ids, self.max_new_tokens, self.temperature, self.top_k, self.top_p,
                       seed=seed, eos_id=self.eos_id, method=base_method(method), draft=draft,
                       **self.method_options.get(method, {}))
        if store is not None and repeat is not None:
            store.add(gen.tokens)               # finished: later prompts of this pass may draft from it
        return gen


def _time_all(run, methods, questions, tokenizer, first, seed, repeats, progress) -> Timings:
    """One untimed warm-up generation per method, then every prompt: `repeats` timings of every
    method, the methods taking turns within each repeat (so drift of the machine hits all alike)."""
    from tqdm.auto import tqdm
    # the oracle's warm-up text: plain decoding's
    plain_first = run("ar", first, seed).tokens if any(base_method(m) == "oracle" for m in methods) else None
    for m in methods:  # warm-up: first calls pay for allocation and kernel selection
        run(m, first, seed, plain_first)
    timed = Timings.empty(methods, DOMAINS, repeats)
    for q in tqdm(questions, desc="bench", disable=not progress):
        ids, qseed = tokenizer.encode(q["turns"][0]), seed + q["question_id"]
        gens = {m: [] for m in methods}
        for r in range(repeats):          # methods take turns within each repeat
            for m in methods:
                gens[m].append(run(m, ids, qseed, gens["ar"][-1].tokens if gens["ar"] else None, r))
        for m in methods:
            timed.record(m, q, gens[m], tokenizer)
    return timed


def _summarize(run, methods, questions, timed, seed, repeats, load_before, command) -> dict:
    """The summary: what ran on what (and how busy the machine was), and every method's rows."""
    used = [d for d in DOMAINS if any(q["category"] == d for q in questions)]
    load_after = load_average()
    threads = inference_threads(run.target.device) or torch.get_num_threads()  # what every timed call used
    summary = {**({"command": command} if command else {}), "device": str(run.target.device),
               "torch": torch.__version__, "python": platform.python_version(),
               "threads": threads, "interop_threads": torch.get_num_interop_threads(),
               "cpu_count": os.cpu_count(), "load_average": [load_before, load_after],
               "temperature": run.temperature, "top_k": run.top_k, "top_p": run.top_p,
               "max_new_tokens": run.max_new_tokens, "seed": seed, "repeats": repeats,
               "prompts_per_domain": {d: sum(q["category"] == d for q in questions) for d in used},
               "prompt_order": [q["question_id"] for q in questions],
               "method_options": run.method_options, "methods": {}}
    # the benchmark itself adds about `threads` to the load: more than that means a competitor
    if load_after > min(threads, os.cpu_count() or 1) + 0.5:
        warnings.warn(f"the machine was busy during the benchmark (load average {load_after:.1f} with "
                      f"{threads} thread(s) of ours on {os.cpu_count()} cores): timings are not "
                      "trustworthy; tau and lossless are")
    if any(base_method(m) in ("suffix", "hybrid") for m in methods):
        summary["suffix_store"] = ("outputs of the earlier prompts of the same pass" if run.suffix_store
                                   else "none: the request only")
    # which weights produced these numbers: a results file read later can be checked against the models
    summary["weights"] = {label: weights_fingerprint(model) for label, model in
                          [("target", run.target), *run.drafts.items()] if isinstance(model, torch.nn.Module)}
    for m in methods:
        summary["methods"][m] = method_rows(m, used, questions, timed, repeats, run.temperature)
    if run.peer_names:
        summary["peers"] = run.peers.describe()
        add_peer_columns(summary, run.peer_names)
    add_round_costs(summary)
    return summary


def _write(out_dir: Path, summary: dict, answers: dict) -> None:
    """DIR/summary.json and DIR/answers/<method>.jsonl."""
    (out_dir / "answers").mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for m, records in answers.items():
        with open(out_dir / "answers" / f"{m}.jsonl", "w", encoding="utf-8") as f:
            for a in records:
                f.write(json.dumps(a) + "\n")


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
