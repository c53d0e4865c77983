"""The studies the chapters report, above everything they measure: the EAGLE-1 ablations
(chapter 2), EAGLE-2's calibration (chapter 4), EAGLE-3's draft vocabulary and why trees fall
behind chains when sampling (chapter 5).
Each runs the package's own generation or benchmark; none is needed to decode.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .bench import run_bench
from .data import DOMAINS, load_prompts, load_tokens
from .distill import validation_batches
from .eagle3 import Eagle3Head, restrict_vocab
from .generation import check_prompt, generate
from .methods import make_drafter
from .sampling import SamplingParams, warp
from .speculative import speculative_generate
from .stats import GenerationStats


@torch.no_grad()
def compare_heads(target, tokenizer, heads: dict, gamma: int = 4, limit: int = 5,
                  max_new_tokens: int = 128, temperatures=(0.0, 1.0), seed: int = 0,
                  progress: bool = True) -> dict:
    """The ablation table: every head drafts chains of `gamma` on the first `limit` evaluation
    prompts of each domain, greedy and sampling. Per head, temperature and domain: tau,
    acceptance per position, and (greedy) whether the output equals plain greedy decoding.
    Hardware-independent: no timings."""
    questions = load_prompts(limit=limit)
    out = {}
    for name, head in heads.items():
        out[name] = {}
        for temp in temperatures:
            per, lossless = {}, {}
            for q in tqdm(questions, desc=f"head {name}, T={temp}", disable=not progress):
                ids = tokenizer.encode(q["turns"][0])
                kw = dict(temperature=temp, seed=seed + q["question_id"], eos_id=tokenizer.eot_id)
                g = generate(target, ids, max_new_tokens, method="eagle1", draft=head, gamma=gamma, **kw)
                d = q["category"]
                per[d] = per.get(d, GenerationStats()).merge(g.stats)
                if temp == 0:
                    lossless[d] = lossless.get(d, True) and g.tokens == generate(target, ids, max_new_tokens, **kw).tokens
            out[name][f"T={temp:g}"] = {d: {"tau": round(st.mean_acceptance_length, 3),
                                            "acceptance_per_pos": [round(a, 3) for a in st.acceptance_per_pos],
                                            "lossless": lossless.get(d)} for d, st in per.items()}
    return {"gamma": gamma, "limit": limit, "max_new_tokens": max_new_tokens,
            "temperatures": list(temperatures), "heads": out}


@torch.inference_mode()
def calibration(target, head, prompts: list[list[int]], max_new_tokens: int = 64,
                total_tokens: int | None = None, depth: int | None = None,
                eagle_topk: int | None = None) -> dict[str, list]:
    """Does the head's confidence predict acceptance? Greedy EAGLE-2 generations of the prompts
    (settings left at None: the device's defaults); for every drafted node of every round, one
    record:

        round       the round's number, counted over all prompts
        depth       the node's depth in the tree (1 = a child of the root)
        rank        its sibling rank (0 = its parent's top pick)
        q           the head's probability of its token given its parent, exp(score - parent's)
        confidence  exp(score): the head's probability of the whole path down to it
        reached     the target accepted every ancestor (so the node was really checked)
        accepted    reached, and the target's greedy choice at its parent is its token

    EAGLE-2's claim is that q predicts `accepted` among reached nodes, and confidence predicts it
    among all nodes. Returns {field: list} over all nodes."""
    rec = {k: [] for k in ("round", "depth", "rank", "q", "confidence", "reached", "accepted")}
    rounds = [0]

    def record(r):                      # one verified round: its tree and the target's logits
        tree, best = r.tree, r.logits.argmax(-1).tolist()                # best[1 + i]: after node i
        depths, ok, n_round = tree.depth, [], rounds[0]
        rounds[0] += 1
        for i, (a, x) in enumerate(zip(tree.parents, tree.tokens)):
            reached = a < 0 or ok[a]
            ok.append(reached and x == best[a + 1])
            parent_score = tree.scores[a] if a >= 0 else 0.0
            rec["round"].append(n_round)
            rec["depth"].append(depths[i])
            rec["rank"].append(sum(1 for j in tree.children(a) if j < i))
            rec["q"].append(math.exp(tree.scores[i] - parent_score))
            rec["confidence"].append(math.exp(tree.scores[i]))
            rec["reached"].append(reached)
            rec["accepted"].append(ok[-1])

    for prompt in prompts:
        tokens = check_prompt(prompt, max_new_tokens, target.max_seq_len)
        drafter = make_drafter("eagle2", target, head, len(tokens) + max_new_tokens,   # checks the head
                               total_tokens=total_tokens, depth=depth, eagle_topk=eagle_topk)
        speculative_generate(target, tokens, max_new_tokens, SamplingParams(0.0), None, None, drafter,
                             on_round=record)
    return rec


@torch.no_grad()
def first_level_logits(target, head, seq: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced, over a whole text: for every position j >= 1, the target's logits for the
    token after seq[j] and the head's for it as a round would draft them there (the root's
    children: the head reads the target's own features at j - 1 and the token seq[j]).
    Returns (target, head) logits, both (len(seq) - 1, V); row 0 is the token after seq[1]."""
    if not getattr(head, "token_shift", True):
        raise ValueError("first_level_logits needs a head with the token shift")
    x = torch.tensor([seq], device=target.device)
    out = target(x, hidden_layers=head.target_layers(target))
    feats = head.input_features({i: h[0] for i, h in out.hidden_states.items()}, target)   # (T, D)
    o = head(target.embed_tokens(x[:, 1:]), feats[None, :-1])[0]                            # (T-1, D)
    return out.logits[0, 1:], head.node_logits(o, target)


def first_level_acceptance(target, head, prompts: list[list[int]], temperature: float = 1.0,
                           eagle_topk: int = 4, max_new_tokens: int = 64, seed: int = 0) -> dict[str, float]:
    """Why dynamic trees fall behind a chain when sampling (chapter 5): the chance that a round's
    first draft level is accepted, both ways, at every position of the target's own sampled
    continuations of the prompts (p: the target's distribution at the temperature there; q: the
    head's, from the target's features as in a round):

        tree    the head's eagle_topk best tokens, each with a one-hot q: by the sibling rule one
                of them is accepted with probability sum of p(x) over them (chapter 4)
        chain   one token drawn from q at the temperature: accepted with probability
                sum over x of min(p(x), q(x)) (chapter 1)

    Returns the means over all positions and their number: {"tree", "chain", "positions"}."""
    params, tree, chain = SamplingParams(temperature), [], []
    for i, prompt in enumerate(prompts):
        tokens = check_prompt(prompt, max_new_tokens, target.max_seq_len)
        seq = tokens + generate(target, tokens, max_new_tokens, temperature=temperature, seed=seed + i).tokens
        p_logits, q_logits = first_level_logits(target, head, seq)
        rows = slice(max(len(tokens) - 2, 0), len(seq) - 2)   # the rows that predict the generated tokens
        p, q = warp(p_logits[rows], params), warp(q_logits[rows], params)
        picks = q_logits[rows].topk(eagle_topk, dim=-1).indices
        tree += p.gather(-1, picks).sum(-1).tolist()
        chain += torch.minimum(p, q).sum(-1).tolist()
    return {"tree": float(np.mean(tree)), "chain": float(np.mean(chain)), "positions": len(tree)}


def vocab_study(target, tokenizer, head: Eagle3Head, sizes, rankings: dict, limit: int | None = 10,
                max_new_tokens: int = 128, repeats: int = 1, progress: bool = True, val_tokens=None) -> dict:
    """The draft-vocabulary trade-off: the head restricted to its `size` most frequent tokens by
    each ranking (name -> (V,) counts; a ranking picks among the head's own tokens), benchmarked
    as method eagle3 in one run against ar (tau and speed), plus the share of the target's greedy
    choices on the validation text (default: the corpus's; val_tokens: domain -> ids) that each
    restricted vocabulary contains (its coverage)."""
    own = head.draft_ids.cpu().numpy()
    heads, coverage = {"eagle3": head}, {}
    val = validation_batches(target, val_tokens or {d: load_tokens(d, "val") for d in DOMAINS}, 256, 8)
    with torch.no_grad():
        best = torch.cat([target.lm_head(b.feature(target)).argmax(-1).flatten() for b in val.values()])
    for name, counts in rankings.items():
        order = own[np.lexsort((own, -np.asarray(counts)[own]))]           # the head's tokens, by count
        for n in sizes:
            if n >= len(own):                                                # the head itself
                continue
            label = f"eagle3@{name}{n}"
            small = restrict_vocab(head, order[:n])
            heads[label] = small
            coverage[label] = round(float(small.t2d[best].float().mean()), 4)
    summary = run_bench(target, tokenizer, list(heads), drafts=heads, limit=limit, max_new_tokens=max_new_tokens,
                        repeats=repeats, progress=progress)
    summary["coverage"] = {"eagle3": round(float(head.t2d[best].float().mean()), 4), **coverage}
    summary["sizes"], summary["rankings"] = list(sizes), list(rankings)
    return summary


def round_profile(target, head, prompts: list[list[int]], method: str = "eagle3", max_new_tokens: int = 128,
                  eos_id: int | None = None, **options) -> dict:
    """Where a tree method's drafting time goes, by function (issue: lean drafting). Greedy
    generations of `method` with `head` on `prompts`, with wall-clock accumulators around the
    drafter's parts (no cProfile: its per-call overhead would swamp these small calls), then plain
    decoding on the same prompts for T(1), its time per token. Returns {"T1_ms", "rounds", "tau",
    "split" (the round's draft / target / verify / bookkeeping per round, in T(1)), "parts"
    (name -> {"calls", "ms", "T1"} per round; a part's time includes the parts it calls)}."""
    import time
    from . import drafting
    from .eagle import StaticTree
    from .eagle2 import DynamicTree
    acc, calls = {}, {}
    parts = [(drafting.HeadDrafter, "propose", "propose: the whole drafting"),
             (drafting.HeadDrafter, "catch_up", "catch_up: the head reads the verified tokens"),
             (drafting.HeadDrafter, "head_level", "head_level: one tree level (mask, then the head)"),
             (type(head), "forward", "the head's forward (catch-up and levels)"),
             (type(head), "node_logits", "node_logits: the draft LM head, per level"),
             (DynamicTree, "grow", "grow: expand (top-k, scores)"), (DynamicTree, "frontier", "frontier"),
             (DynamicTree, "tree", "tree: rerank into the draft tree"),
             (StaticTree, "grow", "grow: a static tree's children")]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in parts]

    def timed(f, label):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[label] = acc.get(label, 0.0) + time.perf_counter() - t
                calls[label] = calls.get(label, 0) + 1
        return wrapper
    generate(target, prompts[0], 8, method=method, draft=head, **options)        # warm-up
    try:
        for owner, name, label in parts:
            f = owner.__dict__[name]
            setattr(owner, name, staticmethod(timed(f.__func__, label)) if isinstance(f, staticmethod)
                    else timed(f, label))
        runs = [generate(target, ids, max_new_tokens, eos_id=eos_id, method=method, draft=head, **options).stats
                for ids in prompts]
    finally:
        for owner, name, f in saved:
            setattr(owner, name, f)
    plain = [generate(target, ids, max_new_tokens, eos_id=eos_id).stats for ids in prompts]
    t1 = sum(s.wall_time - s.prefill_time for s in plain) / sum(len(s.accept_lengths) for s in plain)
    steps = sum(len(s.accept_lengths) for s in runs)
    rounds = sum(s.num_drafts for s in runs) or 1
    split = {k: sum(getattr(s, f"{k}_time") for s in runs) / steps / t1
             for k in ("draft", "target", "verify", "bookkeeping")}
    return {"T1_ms": 1e3 * t1, "rounds": rounds, "tau": sum(s.new_tokens for s in runs) / steps, "split": split,
            "parts": {k: {"calls": calls[k] / rounds, "ms": 1e3 * v / rounds, "T1": v / rounds / t1}
                      for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}}


def greedy_outputs(target, tokenizer, max_new_tokens: int = 128, limit: int | None = None) -> list[dict]:
    """Plain greedy decoding of every evaluation prompt: the text every lossless method produces
    at temperature 0, so a drafter that needs no model can be replayed on it (chapter 6)."""
    out = []
    for q in tqdm(load_prompts(limit=limit), desc="greedy outputs"):
        ids = tokenizer.encode(q["turns"][0])
        out.append({"question_id": q["question_id"], "category": q["category"], "prompt": ids,
                    "output": generate(target, ids, max_new_tokens, eos_id=tokenizer.eot_id).tokens})
    return out


def replay_all(outputs: list[dict], make, regime: str = "request", new_store=None, add=None) -> dict:
    """Greedy replays (minispec.suffix.replay_greedy) of make(prompt, store)'s drafter on every
    output, in one of three regimes of the store of earlier outputs:
        request   none: the request itself only (prompt lookup's information)
        pass      the outputs before it in the list (the bench's honest store, order as listed)
        again     every output of a first pass over the same prompts, its own included (the same
                  task asked again: the regime SuffixDecoding's paper targets)
    Returns {domain and "all": {"tau", "tokens_per_pass" (new tokens per target pass, the prefill
    not counted), "drafted_per_round" (over the rounds that drafted)}}."""
    from .suffix import SuffixStore, replay_greedy
    new_store = new_store or SuffixStore
    add = add or (lambda store, tokens: store.add(tokens))
    if regime not in ("request", "pass", "again"):
        raise ValueError(f"regime must be 'request', 'pass' or 'again', got {regime!r}")
    store = None if regime == "request" else new_store()
    for o in outputs if regime == "again" else []:
        add(store, o["output"])
    totals = {}
    for o in outputs:
        st = replay_greedy(make(o["prompt"], store), o["prompt"], o["output"])
        for key in (o["category"], "all"):
            totals[key] = totals[key].merge(st) if key in totals else st
        if regime == "pass":
            add(store, o["output"])
    return {d: {"tau": round(st.mean_acceptance_length, 3),
                "tokens_per_pass": round(st.new_tokens / len(st.accept_lengths), 3),
                "drafted_per_round": round(st.num_draft_tokens / max(st.num_drafts, 1), 2)}
            for d, st in totals.items()}


def suffix_replays(outputs: list[dict], factors=(1.0, 2.0, 4.0), total_tokens: int = 16,
                   reference: bool = False) -> dict:
    """Chapter 6's comparison on the greedy outputs: prompt lookup, minispec's suffix drafter at
    each max_spec_factor in each regime (replay_all), and, with reference=True, ArcticInference's
    (minispec.peers.ReferenceSuffix) at the same settings: max_tree_depth 24, num_speculative_tokens
    = total_tokens, max_spec_factor, min_token_prob 0.1, tree speculation, the same stores.
    Returns {label: rows}, label "pld" or "suffix f2.0 pass", "reference f2.0 pass", ..."""
    from .peers import ReferenceSuffix
    from .speculative import PromptLookupDrafter
    from .suffix import SuffixDrafter
    V = 1 + max(max(o["prompt"] + o["output"]) for o in outputs)
    rows = {"pld": replay_all(outputs, lambda prompt, store: PromptLookupDrafter(V))}
    for f in factors:
        for regime in ("request", "pass", "again"):
            rows[f"suffix f{f} {regime}"] = replay_all(
                outputs, lambda prompt, store, f=f: SuffixDrafter(V, total_tokens, 24, f, 0.1, store), regime)
            if reference:
                rows[f"reference f{f} {regime}"] = replay_all(
                    outputs, lambda prompt, store, f=f: ReferenceSuffix(prompt, store, total_tokens, 24, f, 0.1), regime,
                    ReferenceSuffix.new_store, ReferenceSuffix.add_to_store)
    return rows
