"""The benchmark's report: what the timed runs leave (`Timings`), the rows of the summary made
from them, what goes beside the rows (the peers' speedup, the share of the oracle, the cost
model's prediction), and the table printed from a summary. minispec.bench runs the benchmark.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

from .stats import GenerationStats


@dataclass
class Timings:
    """What the timed runs leave, per method label and domain."""
    totals: dict     # method -> domain -> GenerationStats of each prompt's median run
    walls: dict      # method -> domain -> [r]: wall time of repeat r over the domain's prompts
    outputs: dict    # method -> question id -> tokens of the median run
    answers: dict    # method -> Spec-Bench answer records

    @classmethod
    def empty(cls, methods: list, domains, repeats: int) -> "Timings":
        return cls({m: {d: GenerationStats() for d in domains} for m in methods},
                   {m: {d: [0.0] * repeats for d in domains} for m in methods},
                   {m: {} for m in methods}, {m: [] for m in methods})

    def record(self, m: str, q: dict, gens: list, tokenizer) -> None:
        """The repeats `gens` of method m on prompt q: every repeat's wall time, the median run's
        stats, tokens and answer."""
        d = q["category"]
        for r, gr in enumerate(gens):
            self.walls[m][d][r] += gr.stats.wall_time
        g = sorted(gens, key=lambda gr: gr.stats.wall_time)[(len(gens) - 1) // 2]  # the median run
        self.totals[m][d] = self.totals[m][d].merge(g.stats)
        self.outputs[m][q["question_id"]] = g.tokens
        self.answers[m].append({"question_id": q["question_id"], "category": d, "model_id": m,
                                "choices": [{"index": 0, "turns": [tokenizer.decode(g.tokens)],
                                             "new_tokens": [g.stats.new_tokens],
                                             "wall_time": [round(g.stats.wall_time, 5)],
                                             "accept_lengths": [g.stats.accept_lengths]}],
                                "tstamp": time.time()})


def method_rows(m: str, domains: list, questions: list, timed: Timings, repeats: int, temperature: float) -> dict:
    """Method m's row for every domain in `domains`, then over all of them ("all")."""
    return {d: _row(m, domains if d == "all" else [d], questions, timed, repeats, temperature)
            for d in domains + ["all"]}


def _row(m, ds, questions, timed, repeats, temperature) -> dict:
    """Method m over the domains ds: the headline is the median repeat (each repeat's speedup
    taken against ar's same repeat), with the range over repeats beside it."""
    st, base = _sum(timed.totals[m][x] for x in ds), _sum(timed.totals["ar"][x] for x in ds)
    # tokens/s of each repeat, and its speedup over ar's same repeat: the spread
    tps_r = [st.new_tokens / sum(timed.walls[m][x][r] for x in ds) for r in range(repeats)]
    base_r = [base.new_tokens / sum(timed.walls["ar"][x][r] for x in ds) for r in range(repeats)]
    spd_r = [a / b for a, b in zip(tps_r, base_r)]
    qids = [q["question_id"] for q in questions if q["category"] in ds]
    lossless = None if temperature > 0 else all(timed.outputs[m][i] == timed.outputs["ar"][i] for i in qids)
    return {"tokens_per_s": round(statistics.median(tps_r), 2),
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


def add_round_costs(summary: dict) -> None:
    """Where a round's time goes, in units of T(1), plain decoding's time per token in the same
    run and domain ((ar's wall time - its prefill) / its steps; summary["t1_ms"]): every row with
    rounds gets "round_cost" = {draft, target, verify, bookkeeping}, each part's seconds per round
    / T(1). A method pays when its tokens per round (tau) exceed the sum: tau / sum is its speedup,
    prefill aside. (This T(1) is a whole plain decoding step, sampling and loop included; the cost
    curve's T(1), `target_cost`, is the target's forward pass alone.) Rows without acceptance (the
    peers) get none."""
    ar = summary["methods"]["ar"]
    t1 = {d: (r["wall_time"] - r["time_split"]["prefill"]) / r["steps"] for d, r in ar.items() if r["steps"]}
    t1 = {d: t for d, t in t1.items() if t > 0}
    summary["t1_ms"] = {d: round(1e3 * t, 4) for d, t in t1.items()}
    for per in summary["methods"].values():
        for d, r in per.items():
            if r["steps"] and d in t1 and r["mean_acceptance_length"] is not None:
                r["round_cost"] = {k: round(r["time_split"][k] / r["steps"] / t1[d], 3)
                                   for k in ("draft", "target", "verify", "bookkeeping")}


def add_peer_columns(summary: dict, peer_names: list) -> None:
    """Every row's speedup over transformers' plain generate ("speedup_vs_hf"); the peers' rows
    have no acceptance (transformers does not report it)."""
    for m, per in summary["methods"].items():
        for d, r in per.items():
            hf = summary["methods"]["hf"][d]["tokens_per_s"]
            r["speedup_vs_hf"] = round(r["tokens_per_s"] / hf, 3) if hf else None
            if m in peer_names:       # transformers does not report its acceptance
                r["mean_acceptance_length"] = r["acceptance_rate"] = None
                r["acceptance_per_pos"] = []


def add_oracle_fractions(summary: dict, budgets: dict) -> None:
    """For every method with an oracle at its budget (budgets: method -> oracle@N), its speedup as
    a share of that oracle's ("oracle_fraction")."""
    for m, o in budgets.items():          # the share of the ceiling at the same budget
        for d, r in summary["methods"][m].items():
            ceiling = summary["methods"][o][d]["speedup"]
            r["oracle"], r["oracle_fraction"] = o, round(r["speedup"] / ceiling, 3) if ceiling else None


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


def load_average() -> float:
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
            + (f", median of {rep} repeats" if rep > 1 else "")
            + (f"; per round, in units of T(1) = plain decoding's time per token ({summary['t1_ms']['all']:.2f} ms): "
               "drafting, the target's pass, the verification rule, bookkeeping" if "all" in summary.get("t1_ms", {}) else ""))
    fraction = any("oracle_fraction" in r for per in summary["methods"].values() for r in per.values())
    vs_hf = "peers" in summary
    split = any("round_cost" in r for per in summary["methods"].values() for r in per.values())
    parts = ("draft", "target", "verify", "bookkeeping")
    cols = (["method", "domain", "tokens/s", "speedup"] + (["speedup range"] if rep > 1 else [])
            + (["vs hf"] if vs_hf else []) + (["of oracle"] if fraction else []) + ["tau", "lossless"]
            + ([f"{k} T(1)" for k in parts] if split else []))
    rows = []
    for m, per in summary["methods"].items():
        for d, r in per.items():
            rng = [f"{r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}"] if rep > 1 else []
            frac = [f"{r['oracle_fraction']:.0%} of {r['oracle']}" if r.get("oracle_fraction") is not None else ""] \
                if fraction else []
            hf = [f"{r['speedup_vs_hf']:.2f}x" if r.get("speedup_vs_hf") else "-"] if vs_hf else []
            tau = "-" if r["mean_acceptance_length"] is None else f"{r['mean_acceptance_length']:.2f}"
            cost = ([f"{r['round_cost'][k]:.2f}" if "round_cost" in r else "-" for k in parts] if split else [])
            rows.append([m, d, f"{r['tokens_per_s']:.1f}", f"{r['speedup'] or 0:.2f}x", *rng, *hf, *frac,
                         tau, str(r["lossless"]), *cost])
    if markdown:
        return "\n".join([head + ":", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                         + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
    return "\n".join([head, fmt(cols)] + [fmt(row) for row in rows])
