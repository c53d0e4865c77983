"""The benchmark's summary and the command line, on the shipped models."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minispec
from minispec.bench import format_summary, run_bench


@pytest.fixture(scope="module")
def shipped():
    return minispec.load_target("cpu"), minispec.load_draft("cpu"), minispec.load_tokenizer()


def test_bench_writes_the_summary_and_answers(tmp_path, shipped):
    target, draft, tok = shipped
    s = run_bench(target, tok, ["ar", "sps", "pld"], drafts={"sps": draft},
                  method_options={"sps": {"gamma": 3}, "pld": {"gamma": 3}}, limit=1, max_new_tokens=12,
                  out_dir=tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    for key in ("device", "torch", "temperature", "max_new_tokens"):
        assert key in on_disk
    for m in ("ar", "sps", "pld"):
        for d in minispec.DOMAINS + ("all",):
            r = on_disk["methods"][m][d]
            assert r["lossless"] is True
            assert r["tokens_per_s"] > 0 and r["speedup"] > 0
            assert isinstance(r["acceptance_per_pos"], list)
    assert on_disk["methods"]["ar"]["all"]["mean_acceptance_length"] == 1.0
    assert on_disk["methods"]["ar"]["all"]["speedup"] == 1.0
    assert on_disk["methods"]["sps"]["all"]["mean_acceptance_length"] > 1.0
    # a round's time in units of T(1): plain decoding's parts sum to one step; every method's parts
    # add up to its decoding time (wall time less prefill)
    t1 = on_disk["t1_ms"]["all"] / 1e3
    assert sum(on_disk["methods"]["ar"]["all"]["round_cost"].values()) == pytest.approx(1.0, abs=0.01)
    for m in ("sps", "pld"):
        r = on_disk["methods"][m]["all"]
        assert sum(r["round_cost"].values()) * r["steps"] * t1 == pytest.approx(
            r["wall_time"] - r["time_split"]["prefill"], rel=0.02, abs=2e-3)
    assert "draft T(1)" in format_summary(on_disk)
    answers = [json.loads(line) for line in (tmp_path / "answers" / "sps.jsonl").read_text().splitlines()]
    assert len(answers) == 3
    a = answers[0]
    assert {"question_id", "category", "model_id", "choices"} <= set(a)
    assert {"turns", "new_tokens", "wall_time", "accept_lengths"} <= set(a["choices"][0])


def test_bench_with_sampling_reports_lossless_as_null(shipped):
    target, draft, tok = shipped
    s = run_bench(target, tok, ["sps"], drafts={"sps": draft}, domains=["math"], limit=1,
                  max_new_tokens=8, temperature=0.8, progress=False)
    assert s["methods"]["sps"]["math"]["lossless"] is None
    assert s["temperature"] == 0.8


def test_bench_rejects_unknown_methods_and_domains(shipped):
    target, _, tok = shipped
    with pytest.raises(ValueError, match="unknown method"):
        run_bench(target, tok, ["eagle9"], limit=1, progress=False)
    with pytest.raises(ValueError, match="unknown domain"):
        run_bench(target, tok, ["ar"], domains=["poetry"], limit=1, progress=False)


def cli_process(*args):
    """`python -m minispec ARGS` in a fresh interpreter, as a user types it."""
    return subprocess.run([sys.executable, "-m", "minispec", *args], capture_output=True, text=True,
                          env={**os.environ, "MINISPEC_DEVICE": "cpu"}, timeout=300)


def cli(*args):
    """The same command line, run in this process (`__main__.main(args)`, stdout and stderr
    captured): the same parser, commands and error handling, without a new interpreter's 2 s
    of start-up per call. An exception other than the parser's exit propagates and fails the
    test, as a traceback would."""
    import contextlib
    import io
    from types import SimpleNamespace
    from minispec.__main__ import main
    out, err, code = io.StringIO(), io.StringIO(), 0
    device = os.environ.get("MINISPEC_DEVICE")
    os.environ["MINISPEC_DEVICE"] = "cpu"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        if device is None:
            del os.environ["MINISPEC_DEVICE"]
        else:
            os.environ["MINISPEC_DEVICE"] = device
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_cli_generate_prints_text_and_speed():
    r = cli_process("generate", "--prompt", "Question: Ava has 3 apples.", "--max-new-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Question: Ava has 3 apples.")
    assert "tokens/s" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--prompt", ""], "prompt is empty"),
    (["--prompt", "x", "--temperature", "-1"], "temperature"),
    (["--prompt", "x", "--top-p", "2"], "top_p"),
    (["--prompt", "x", "--max-new-tokens", "0"], "max_new_tokens"),
    (["--prompt", "x " * 600], "context"),
    (["--prompt", "x", "--method", "sps", "--gamma", "0"], "gamma"),
    (["--prompt", "x", "--gamma", "3"], "method(s) ar take no gamma"),     # not silently ignored
    (["--prompt", "x", "--temperature", "1e-300"], "too small"),
    (["--prompt", "x", "--method", "eagle1-tree", "--choices", "t99"], "not a tree name"),
    (["--prompt", "x", "--method", "eagle1-tree", "--choices", "[[0],[2]]"], "elder sibling"),
    (["--prompt", "x", "--method", "eagle2000"], "unknown method"),
])
def test_cli_bad_input_is_one_clear_line(args, message):
    r = cli("generate", *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["draft", "--init", "data/draft"], "--seed and --regen-temperature apply to draft heads"),
    (["target", "--seed", "1"], "--seed and --regen-temperature apply to draft heads"),
    (["target", "--regen-temperature", "0"], "--seed and --regen-temperature apply to draft heads"),
    (["eagle1", "--ttt-steps", "3"], "apply to the eagle3 head"),
    (["eagle1", "--regen-temperature", "0"], "not to corpus windows"),        # eagle1 reads the corpus by default
    (["eagle3", "--source", "corpus", "--regen-temperature", "0.5"], "not to corpus windows"),
    (["eagle1", "--source", "mixed", "--regen-temperature", "-1"], "temperature must be a finite number >= 0"),
])
def test_cli_train_refuses_options_of_another_model(args, message):
    r = cli("train", *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def plain_answers(shipped):
    """Every evaluation prompt with its first 32 tokens of plain greedy decoding (computed once
    for the methods below)."""
    target, _, tok = shipped
    answers = []
    for q in minispec.load_prompts():
        ids = tok.encode(q["turns"][0])
        answers.append((q, ids, minispec.generate(target, ids, 32, eos_id=tok.eot_id).tokens))
    return answers


@pytest.mark.parametrize("method, options", [("sps", {"gamma": 4}), ("pld", {"gamma": 4}),
                                             ("eagle1", {"gamma": 4}), ("eagle1-tree", {})])
def test_greedy_is_identical_to_plain_decoding_on_every_evaluation_prompt(shipped, plain_answers, method, options):
    target, draft, tok = shipped
    draft = minispec.load_eagle1(target) if method.startswith("eagle1") else {"sps": draft}.get(method)
    accepted = 0
    for q, ids, ar in plain_answers:
        spec = minispec.generate(target, ids, 32, eos_id=tok.eot_id, method=method, draft=draft, **options)
        assert spec.tokens == ar, f"question {q['question_id']}"
        accepted += spec.stats.num_accepted_tokens
    assert accepted > 0  # the drafts were really checked, not all skipped


def test_round_costs_are_seconds_per_round_over_plain_decodings_time_per_token():
    """Hand-made rows: ar decodes 10 steps in 0.5 s after a 0.1 s prefill (T(1) = 50 ms); a method
    spends 0.3 s drafting, 1.2 s in the target, 0.06 s verifying and 0.04 s elsewhere over 8
    rounds; a peer has no acceptance, so no split; an old summary prints without the columns."""
    from minispec.report import add_round_costs

    def row(wall, prefill, steps, draft=0.0, target=0.0, verify=0.0, tau=1.0):
        split = {"prefill": prefill, "draft": draft, "target": target, "verify": verify,
                 "bookkeeping": round(wall - prefill - draft - target - verify, 6)}
        return {"wall_time": wall, "time_split": split, "steps": steps, "mean_acceptance_length": tau}
    summary = {"methods": {"ar": {"all": row(0.6, 0.1, 10, target=0.45, verify=0.02)},
                           "m": {"all": row(1.7, 0.1, 8, draft=0.3, target=1.2, verify=0.06, tau=3.0)},
                           "peer": {"all": {**row(0.5, 0.0, 10), "mean_acceptance_length": None}}}}
    add_round_costs(summary)
    assert summary["t1_ms"] == {"all": 50.0}
    assert summary["methods"]["m"]["all"]["round_cost"] == {"draft": 0.75, "target": 3.0, "verify": 0.15,
                                                             "bookkeeping": 0.1}
    assert sum(summary["methods"]["ar"]["all"]["round_cost"].values()) == pytest.approx(1.0)
    assert "round_cost" not in summary["methods"]["peer"]["all"]
    old = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "results" / "headline.json").read_text())
    assert "T(1)" not in format_summary(old) and "eagle3" in format_summary(old)


def test_repeats_report_the_median_run_and_the_spread(shipped, monkeypatch):
    """Planted wall times: the median repeat is the headline, the range spans the repeats, and
    each prompt's answer keeps its median run."""
    import minispec.bench as bench
    target, _, tok = shipped
    times = iter([9.0, 9.0, 1.0, 0.5, 0.3, 0.1, 0.1, 1.0])  # warm-up ar, pld; then 3 repeats of ar, pld
    real = bench.generate

    def fake(*a, **kw):
        g = real(*a, **kw)
        g.stats.wall_time = next(times)
        return g
    monkeypatch.setattr(bench, "generate", fake)
    s = run_bench(target, tok, ["pld"], domains=["math"], limit=1, max_new_tokens=6, repeats=3,
                  progress=False)
    ar, pld = s["methods"]["ar"]["math"], s["methods"]["pld"]["math"]
    n = ar["new_tokens"]
    assert s["repeats"] == 3 and ar["wall_time"] == 0.3 and pld["wall_time"] == 0.5   # the median runs
    assert ar["tokens_per_s_range"] == [round(n / 1.0, 2), round(n / 0.1, 2)]
    assert ar["tokens_per_s"] == round(n / 0.3, 2)                                   # the median repeat
    assert pld["speedup_range"] == [round(0.1 / 1.0, 3), round(0.3 / 0.1, 3)]       # per repeat: 2.0, 3.0, 0.1
    assert pld["speedup"] == 2.0                                                    # their median
    assert s["threads"] >= 1 and len(s["load_average"]) == 2
    with pytest.raises(ValueError, match="repeats"):
        run_bench(target, tok, ["ar"], limit=1, repeats=0, progress=False)


def test_the_suffix_store_holds_only_earlier_outputs_of_the_same_pass(shipped, monkeypatch):
    """suffix drafts from the outputs of the prompts before it in the same repeat: never its own,
    never another repeat's (each repeat starts empty), the warm-up's store thrown away; the
    order is recorded. --no-suffix-store (suffix_store=False): the request only."""
    import minispec.bench as bench
    from minispec.suffix import SuffixStore
    target, _, tok = shipped
    seen, real = [], bench.generate

    def spy(target, ids, *a, method="ar", draft=None, **kw):
        g = real(target, ids, *a, method=method, draft=draft, **kw)
        if method == "suffix":
            seen.append((tuple(ids), id(draft), draft.texts) if isinstance(draft, SuffixStore) else draft)
        return g
    monkeypatch.setattr(bench, "generate", spy)
    s = run_bench(target, tok, ["suffix"], domains=["math"], limit=3, max_new_tokens=8, repeats=2, progress=False)
    warm, timed = seen[0], seen[1:]
    assert warm[2] == 0 and warm[1] not in {sid for _, sid, _ in timed}
    per_prompt = [timed[2 * i:2 * i + 2] for i in range(3)]                  # prompt by prompt, repeats inside
    assert [[n for *_, n in calls] for calls in per_prompt] == [[0, 0], [1, 1], [2, 2]]
    assert len({sid for _, sid, _ in timed}) == 2                             # one store per repeat
    assert s["prompt_order"] == [q["question_id"] for q in minispec.load_prompts(domains=["math"], limit=3)]
    assert s["suffix_store"].startswith("outputs of the earlier prompts")
    seen.clear()
    s = run_bench(target, tok, ["suffix"], domains=["math"], limit=1, max_new_tokens=8, suffix_store=False,
                  progress=False)
    assert s["suffix_store"].startswith("none") and seen == [None, None]      # warm-up and the prompt: no store


def test_cli_export_hf_works_outside_the_checkout(tmp_path):
    """The default model is found through the package, not the working directory."""
    r = subprocess.run([sys.executable, "-m", "minispec", "export-hf", "--out", str(tmp_path / "hf")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hf" / "config.json").exists() and (tmp_path / "hf" / "model.safetensors").exists()


def test_cli_runs_the_eagle_methods_with_their_options():
    for args in (["--method", "eagle1", "--gamma", "3"], ["--method", "eagle1-tree", "--choices", "t8"],
                 ["--method", "eagle1-tree", "--choices", "[[0],[1],[0,0]]"],
                 ["--method", "eagle3", "--total-tokens", "6", "--depth", "4"]):
        r = cli("generate", "--prompt", "Question: Ava has 3 apples.", "--max-new-tokens", "12", *args)
        assert r.returncode == 0, r.stderr
        assert "tau" in r.stdout


def test_bench_variants_share_one_run(shipped):
    target, draft, tok = shipped
    head = minispec.load_eagle1(target)
    s = run_bench(target, tok, ["eagle1-tree@a", "eagle1-tree@b"], drafts={"eagle1-tree": head},
                  method_options={"eagle1-tree@a": {"choices": [[0]]}, "eagle1-tree@b": {"choices": [[0], [1]]}},
                  domains=["math"], limit=1, max_new_tokens=12, progress=False, cost_curve_max=3)
    assert list(s["methods"]) == ["ar", "eagle1-tree@a", "eagle1-tree@b"]
    assert all(s["methods"][m]["math"]["lossless"] for m in s["methods"])
    from minispec.checkpoint import weights_fingerprint     # the summary names the weights it measured
    assert s["weights"] == {"target": weights_fingerprint(target), "eagle1-tree": weights_fingerprint(head)}
    assert s["target_cost"]["n"] == [1, 2, 3]
    # the cost model, where the curve covers a round's verification pass (1 + 1 tokens, or up to 3)
    a, b = s["methods"]["eagle1-tree@a"]["math"], s["methods"]["eagle1-tree@b"]["math"]
    assert a["predicted_speedup"] > 0 and b["predicted_speedup"] > 0
    assert a["prediction_error"] == pytest.approx((a["predicted_speedup"] - a["speedup"]) / a["speedup"], abs=2e-3)
    assert a["drafted_tokens"] <= a["steps"] and b["drafted_tokens"] <= 2 * b["steps"]


def test_bench_variant_drafts_with_the_model_in_its_folder(tmp_path):
    head_dir = str(minispec.DATA_DIR / "eagle1")
    r = cli("bench", "--methods", "eagle1,eagle1@again", "--draft", f"eagle1@again={head_dir}",
            "--domains", "math", "--limit", "1", "--max-new-tokens", "8", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())["methods"]
    assert s["eagle1@again"]["math"]["mean_acceptance_length"] == s["eagle1"]["math"]["mean_acceptance_length"]
    for bad, message in ((f"eagle1@x={head_dir}", "expected METHOD=FOLDER"),
                         (f"eagle1@again={tmp_path}", "no manifest.json")):
        r = cli("bench", "--methods", "eagle1,eagle1@again", "--draft", bad, "--limit", "1", "--out", str(tmp_path))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_oracle_is_always_right_and_every_method_gets_its_fraction(shipped):
    target, draft, tok = shipped
    ids = tok.encode("ROMEO:")
    plain = minispec.generate(target, ids, 20).tokens
    g = minispec.generate(target, ids, 20, method="oracle", draft=ids + plain, gamma=4)
    assert g.tokens == plain
    # every round is a full chain of 4 accepted drafts, but the last, cut by max_new_tokens
    assert g.stats.accept_lengths[:-1] == [5] * (len(g.stats.accept_lengths) - 1)
    assert g.stats.mean_acceptance_length > 4.0
    s = run_bench(target, tok, ["sps", "eagle1-tree"], drafts={"sps": draft, "eagle1-tree": minispec.load_eagle1(target)},
                  method_options={"sps": {"gamma": 3}}, domains=["python"], limit=1, max_new_tokens=16,
                  progress=False, oracle=True)
    assert list(s["methods"]) == ["ar", "sps", "eagle1-tree", "oracle@3", "oracle@4"]   # t4: 4 nodes
    for m, o in (("sps", "oracle@3"), ("eagle1-tree", "oracle@4")):
        r = s["methods"][m]["python"]
        assert r["oracle"] == o and r["lossless"] and s["methods"][o]["python"]["lossless"]
        assert r["oracle_fraction"] == pytest.approx(r["speedup"] / s["methods"][o]["python"]["speedup"], abs=2e-3)
    assert s["methods"]["oracle@3"]["python"]["mean_acceptance_length"] > 3.0
    with pytest.raises(ValueError, match="temperature 0"):
        run_bench(target, tok, ["sps"], drafts={"sps": draft}, limit=1, temperature=1.0, oracle=True, progress=False)
    with pytest.raises(ValueError, match="drafts a known text"):
        minispec.generate(target, ids, 5, method="oracle", draft=None)


def test_the_peers_run_side_by_side_with_their_settings(shipped, tmp_path):
    pytest.importorskip("transformers", reason="the peers need transformers (in the test extra)")
    r = cli("bench", "--methods", "ar,sps,pld", "--gamma", "sps=3", "--peers", "hf", "--domains", "math",
            "--limit", "1", "--max-new-tokens", "12", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert list(s["methods"]) == ["ar", "sps", "pld", "hf", "hf-assisted", "hf-assisted-g3", "hf-pld-g6"]
    assert s["peers"]["hf-assisted-g3"] == {"num_assistant_tokens": 3, "num_assistant_tokens_schedule": "constant",
                                            "assistant_confidence_threshold": 0.0}
    for m, per in s["methods"].items():
        row = per["math"]
        assert row["lossless"] is True, m               # the same greedy text as minispec's ar
        assert row["speedup_vs_hf"] == pytest.approx(row["tokens_per_s"] / per_hf(s), rel=1e-2)
    assert s["methods"]["hf"]["math"]["mean_acceptance_length"] is None
    r = cli("bench", "--methods", "ar", "--peers", "vllm", "--limit", "1", "--out", str(tmp_path))
    assert r.returncode == 2 and "the only peer is 'hf'" in r.stderr


def per_hf(summary):
    return summary["methods"]["hf"]["math"]["tokens_per_s"]


def test_cli_help_lists_every_command_on_one_line(capsys):
    from minispec.__main__ import main
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for command in ("data", "train", "generate", "demo", "bench", "sweep", "ablate", "vocab", "export-hf"):
        line = [ln for ln in lines if ln.split()[:1] == [command]]
        assert len(line) == 1 and len(line[0].split()) > 2, f"{command}: {line}"


def test_cli_demo_shows_plain_sps_and_eagle1_with_identical_output(capsys):
    from minispec.__main__ import main
    main(["demo", "--max-new-tokens", "8", "--repeats", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    for d in minispec.DOMAINS:
        assert f"=== {d} ===" in out
    rows = [ln for ln in out.splitlines() if ln.startswith(("plain decoding", "sps", "eagle1"))]
    assert len(rows) == 3 * len(minispec.DOMAINS)
    assert all(ln.endswith("True") for ln in rows if not ln.startswith("plain"))
    assert "faster than plain decoding" in out and "chapter 1" in out
