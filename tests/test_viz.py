"""Notebook helpers: the steppers run the package's own code and report it faithfully; the
cost models compute what their formulas say."""
import matplotlib
import pytest
import torch

from conftest import TINY, tiny_model
from minispec import generate
from minispec.costs import (cost_curve, expected_tokens, forward_cost, memory_bound_speedup, predicted_speedup,
                            refined_speedup, round_speedup, weight_ratio)
from minispec.model import ModelConfig
from minispec.sampling import SamplingParams
from minispec.tokenizer import Tokenizer
from minispec.viz import DecodeStepper, RoundStepper, Trace, fmt_prob, one_at_a_time, plot_round, round_fates, show

matplotlib.use("Agg")
DRAFT = ModelConfig(**{**TINY.to_dict(), "n_layers": 1})
TOK = Tokenizer([])  # bytes only: enough to render the tiny models' ids


def stepper(params, **kw):
    return RoundStepper(tiny_model(0), tiny_model(1, DRAFT), [3, 1, 4, 1, 5], gamma=3, params=params, seed=0, **kw)


def test_stepper_reports_what_the_verifier_did():
    st = stepper(SamplingParams(1.0))
    for _ in range(6):
        before = len(st.tokens)
        r = st.step()
        n = r["n_accepted"]
        assert [row["accepted"] for row in r["drafts"]] == [True] * n + [False] * (len(r["drafts"]) - n)
        assert st.tokens[before:] == [row["token"] for row in r["drafts"][:n]] + [r["next_token"]]
        assert all(0 <= row["accept_prob"] <= 1 and row["q"] > 0 for row in r["drafts"])
        for row in r["drafts"][:n + 1]:  # the uniforms shown are the ones the verifier used
            assert row["accepted"] == (row["u"] * row["q"] < row["p"])
        assert (r["residual"] is None) == r["bonus"]
        if r["residual"]:
            assert 0 < sum(r["residual"]["probs"]) <= 1 + 1e-6
    assert len(st.history) == 6


def test_greedy_stepper_reproduces_greedy_decoding_and_takes_new_settings():
    st = stepper(SamplingParams(0.0))
    st.step()
    st.gamma = 1                                 # a slider moved between rounds
    st.run(20)
    want = generate(tiny_model(0), [3, 1, 4, 1, 5], len(st.tokens) - 5).tokens
    assert st.tokens[5:] == want
    assert all(len(r["drafts"]) == 1 for r in st.history[1:])
    for r in st.history:
        for row in r["drafts"][:r["n_accepted"]]:
            assert row["token"] == row["target_choice"]
    st.gamma = 0
    with pytest.raises(ValueError, match="gamma"):
        st.step()


def test_trace_counts_every_token_once_and_renders():
    st = stepper(SamplingParams(1.0))
    records = st.run(15)
    tr = Trace(TOK, [3, 1, 4, 1, 5], records)
    c = tr.counts()
    assert c["accepted"] + c["correction"] + c["bonus"] == len(st.tokens) - 5
    assert c["correction"] == c["rejected"] and c["bonus"] + c["correction"] + c["plain"] == len(records)
    assert tr._repr_html_().count("<sub") == len(records)
    assert [f for _, f in round_fates(records[0])][-1] in ("bonus", "correction")
    plot_round(records[0], TOK)
    plot_round(stepper(SamplingParams(0.0)).step(), TOK)


def test_decode_stepper_follows_generate():
    model = tiny_model(0)
    ds = DecodeStepper(model, [3, 1, 4], SamplingParams(0.0))
    records = [ds.step() for _ in range(8)]
    assert [r["token"] for r in records] == generate(model, [3, 1, 4], 8).tokens
    # greedy shows the model's own distribution (not a one-hot), and takes its top token
    assert all(r["token"] == r["top_tokens"][0] and 0 < r["p_token"] < 1 and r["entropy"] > 0 for r in records)
    ds.params = SamplingParams(1.0, top_k=3)
    r = ds.step(top=5)
    assert r["token"] in r["top_tokens"][:3] and r["top_probs"][3] == 0 and 0 < r["p_token"] <= 1


def test_fmt_prob():
    assert [fmt_prob(x) for x in (0.0, 2.7e-5, 0.0031, 0.5)] == ["0", "2.7e-05", "0.003", "0.500"]


def test_cost_models():
    assert expected_tokens(0.5, 2) == pytest.approx(1.75) and expected_tokens(1.0, 3) == 4
    assert predicted_speedup(0.5, 2, 0.25) == pytest.approx(1.75 / 1.5)
    # verification of gamma + 1 tokens costing one step: the refined model is tau / (gamma c + 1)
    assert refined_speedup(1.75, 2, 0.25, {1: 1.0, 3: 1.0}) == pytest.approx(1.75 / 1.5)
    assert refined_speedup(3.0, 2, 0.0, {1: 1.0, 3: 2.0}) == pytest.approx(1.5)
    T = {1: 1.0, 2: 1.2, 4: 2.0}
    assert round_speedup(3.0, 4, 0.5, T) == pytest.approx(3.0 / 2.5)
    assert round_speedup(3.0, 3, 0.0, T) == pytest.approx(3.0 / 1.6)              # between 2 and 4
    assert round_speedup(2.0, 1, 0.0, T) == pytest.approx(2.0)
    assert memory_bound_speedup(4.0, 3, 0.1) == pytest.approx(4.0 / 1.3)
    model = tiny_model()
    assert weight_ratio(0, model) == 0
    full = sum(p.numel() for p in model.parameters()) - model.embed_tokens.weight.numel()
    assert weight_ratio(full, model) == pytest.approx(1.0)


def test_forward_cost_curve_and_show():
    model = tiny_model(0)
    assert forward_cost(model, 4, context=8, repeats=2, warmup=1) > 0
    curve = cost_curve(model, [1, 2], context=8, repeats=3)
    assert curve["n"] == [1, 2] and all(lo <= m <= hi for lo, m, hi in zip(curve["min"], curve["median"], curve["max"]))
    assert "def forward_cost" in show(forward_cost).data


def test_generation_stats_split_the_time():
    s = generate(tiny_model(0), [3, 1, 4, 1, 5], 30, method="sps", draft=tiny_model(1, DRAFT), gamma=3).stats
    assert min(s.prefill_time, s.draft_time, s.target_time, s.verify_time) > 0
    assert s.draft_time + s.target_time + s.verify_time + s.prefill_time <= s.wall_time
    assert s.bookkeeping_time >= 0


def test_a_round_with_nothing_drafted_is_a_plain_step():
    st = RoundStepper(tiny_model(0), None, [1, 2, 3, 4], gamma=3, params=SamplingParams(0.0), method="pld")
    r = st.step()                                   # no earlier occurrence of the last token
    assert r["drafts"] == [] and not r["bonus"] and round_fates(r)[-1][1] == "plain"
    plot_round(r, TOK)


def test_tree_stepper_follows_greedy_decoding_across_drafter_changes():
    """The tree stepper (chapters 3 and 4) through static and dynamic trees, switching the
    drafter between rounds as the chapter 4 widget does: the text is plain greedy decoding, every
    node has a fate, and EAGLE-2's nodes carry scores that plot_tree draws."""
    import matplotlib.pyplot as plt
    from test_eagle import random_head
    from minispec.drafting import HeadDrafter
    from minispec.eagle import TREES, StaticTree
    from minispec.eagle2 import DynamicTree
    from minispec.viz import TreeStepper, plot_tree
    target = tiny_model()
    head = random_head(target, 1)
    prompt = [3, 1, 4, 1, 5]
    want = generate(target, prompt, 40).tokens
    st = TreeStepper(target, head, prompt, choices=TREES["t8"])
    for i in range(6):
        if i % 2:
            st.set_drafter(HeadDrafter(head, target, target.max_seq_len, DynamicTree(total_tokens=4 + i, depth=3, eagle_topk=2)))
        elif i:
            st.set_drafter(HeadDrafter(head, target, target.max_seq_len, StaticTree(TREES["t4"])))
        r = st.step()
        assert len(r["fates"]) == len(r["tree"]) and r["fates"].count("accepted") == len(r["accepted"])
        assert (r["tree"].scores is not None) == bool(i % 2)
        plot_tree(r, TOK)
        plt.close("all")
    new = st.tokens[len(prompt):]
    assert new == want[:len(new)] and len(new) >= 6


def test_a_tree_round_that_accepts_nothing_ends_in_a_correction():
    """A tree round whose drafts were all refused drafted something: its token is the target's
    correction, not a plain step (the trace of chapters 2 to 5 counts it so)."""
    from test_eagle import random_head
    from minispec.eagle import TREES
    from minispec.viz import TreeStepper
    target = tiny_model()
    st = TreeStepper(target, random_head(target, 1), [3, 1, 4, 1, 5], choices=TREES["t4"])
    records = st.run(40)
    refused = [r for r in records if not r["accepted"]]
    assert refused, "an untrained head should miss at least once in 40 tokens"
    assert all(round_fates(r)[-1][1] == "correction" for r in refused)
    c = Trace(TOK, [3, 1, 4, 1, 5], records).counts()
    assert c["plain"] == 0 and c["bonus"] + c["correction"] == len(records)


def test_widget_callbacks_run_one_at_a_time():
    """A kernel may call widget callbacks from two threads; wrapped ones never overlap, while the
    same callbacks unwrapped do (so the check can fail)."""
    import threading
    import time

    def overlaps(wrap):
        inside, seen = [0], []

        def callback(_=None):
            inside[0] += 1
            seen.append(inside[0])
            time.sleep(0.05)
            inside[0] -= 1
        cbs = [wrap(callback), wrap(callback)]
        threads = [threading.Thread(target=cb) for cb in cbs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return max(seen) > 1

    assert not overlaps(one_at_a_time)
    assert overlaps(lambda f: f)
    assert one_at_a_time(show).__name__ == "show"


def test_the_recorded_dynamic_tree_drafts_the_same_trees_and_records_expand_and_rerank():
    """viz.RecordedDynamicTree (chapter 4's level-by-level picture) is EAGLE-2's policy unchanged:
    round after round it drafts exactly DynamicTree's trees, and what it records is that round's:
    eagle_topk children per frontier node at each step, the frontier the best eagle_topk of its
    step, the kept candidates the tree's nodes (the best total_tokens scores, closed under parents)."""
    import matplotlib.pyplot as plt
    from test_eagle import random_head
    from minispec.drafting import HeadDrafter
    from minispec.eagle2 import DynamicTree
    from minispec.viz import RecordedDynamicTree, TreeStepper, plot_expand_rerank
    target = tiny_model()
    head = random_head(target, 1)
    settings = {"total_tokens": 7, "depth": 3, "eagle_topk": 3}
    plain = TreeStepper(target, head, [3, 1, 4, 1, 5], drafter=HeadDrafter(head, target, 64, DynamicTree(**settings)))
    drafter = HeadDrafter(head, target, 64, RecordedDynamicTree(**settings))
    recorded = TreeStepper(target, head, [3, 1, 4, 1, 5], drafter=drafter)
    for _ in range(4):
        a, b = plain.step(), recorded.step()
        assert (a["tree"].tokens, a["tree"].parents) == (b["tree"].tokens, b["tree"].parents)
        policy, cand = drafter.policy, drafter.policy.cand
        assert [len(lv["new"]) for lv in policy.levels] == [3, 9, 9]
        for lv, nxt in zip(policy.levels, policy.levels[1:]):
            best = sorted(lv["new"], key=lambda i: -cand.scores[i])[:3]
            assert lv["frontier"] == best
            assert {cand.parents[i] for i in nxt["new"]} == set(lv["frontier"])
        assert policy.levels[-1]["frontier"] == []
        assert [cand.tokens[i] for i in policy.kept] == b["tree"].tokens and len(policy.kept) == 7
        dropped = max(cand.scores[i] for i in range(len(cand.tokens)) if i not in policy.kept)
        assert min(cand.scores[i] for i in policy.kept) >= dropped
        plot_expand_rerank(policy, TOK)
        plt.close("all")


def test_head_diagrams_read_the_real_modules():
    """viz.plot_head (chapters 2 and 5): every size and parameter count in the boxes is the
    head's own, so a head of another shape draws other numbers; a head of no EAGLE kind is refused."""
    import matplotlib.pyplot as plt
    from test_eagle import random_head
    from test_eagle3 import random_eagle3
    from minispec.viz import head_blocks, plot_head
    target = tiny_model()
    for head in (random_head(target), random_eagle3(target)):
        boxes, arrows, (back_to, label) = head_blocks(head, target)
        text = {name: t for name, t, *_ in boxes}
        assert f"{sum(p.numel() for p in head.fc.parameters()):,} parameters" in text["fc"]
        assert f"{target.vocab_size}" in text["emb"] and f"{head.config.dim}" in text["out"]
        assert {a for pair in arrows for a in pair} <= set(text) and back_to in text
        plot_head(head, target)
        plt.close("all")
    e3 = random_eagle3(target)
    assert f"{e3.config.vocab_size} tokens" in dict((n, t) for n, t, *_ in head_blocks(e3, target)[0])["q"]
    assert "layers " + ", ".join(map(str, e3.layers)) in dict((n, t) for n, t, *_ in head_blocks(e3, target)[0])["h"]
    with pytest.raises(ValueError, match="EAGLE-1 or EAGLE-3 head"):
        head_blocks(tiny_model(), target)
    noshift = dict((n, t) for n, t, *_ in head_blocks(random_head(target, token_shift=False), target)[0])["tok"]
    assert "x_t$" in noshift and "no token shift" in noshift
