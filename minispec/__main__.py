"""Command line: python -m minispec COMMAND [options]; python -m minispec COMMAND --help for a
command's options."""
from __future__ import annotations

import sys

from .cli import bench_kwargs, build_parser, drafts_from_flags, options_from_flags


def cmd_data(args):
    from .data import build
    info = build(retrain_tokenizer=not args.keep_tokenizer)
    for k, v in info.items():
        print(f"{k:20s} {v['documents']:6d} documents {v['chars']:>10,d} chars")


def cmd_train(args):
    from pathlib import Path
    from .device import default_device
    from .eagle3_train import TTT_STEPS
    from .train import preset, record_one_layer_losses, train
    command = "python -m minispec " + " ".join(sys.argv[1:])
    if args.model == "eagle3":
        from . import load_target
        from .eagle3_train import DRAFT_VOCAB, train_eagle3
        if args.no_token_shift or args.no_feature_loss:
            raise ValueError("--no-token-shift and --no-feature-loss are EAGLE-1 ablations; an EAGLE-3 "
                             "head always reads the next token and has no feature loss")
        train_eagle3(load_target(default_device(args.device)), args.out, args.run_dir, args.steps,
                     ttt_steps=args.ttt_steps, draft_vocab_size=args.draft_vocab or DRAFT_VOCAB,
                     vocab_source=args.vocab_source, source=args.source or "regenerated",
                     num_batches=args.data_batches, cache_dir=args.cache_dir, command=command,
                     init=args.init, seed=args.seed, regen_temperature=args.regen_temperature)
        return
    if args.ttt_steps != TTT_STEPS or args.draft_vocab is not None or args.vocab_source != "data":
        raise ValueError("--ttt-steps, --draft-vocab and --vocab-source apply to the eagle3 head")
    if args.model == "eagle1":
        from . import load_target
        from .eagle_train import train_eagle1
        train_eagle1(load_target(default_device(args.device)), args.out, args.run_dir, args.steps,
                     token_shift=not args.no_token_shift, feature_loss=not args.no_feature_loss,
                     cache_dir=args.cache_dir, source=args.source or "corpus", num_batches=args.data_batches,
                     command=command, init=args.init, seed=args.seed, regen_temperature=args.regen_temperature)
        return
    if (args.no_token_shift or args.no_feature_loss or args.cache_dir or args.source is not None
            or args.data_batches is not None or args.init is not None or args.seed is not None
            or args.regen_temperature != 1):
        raise ValueError("--no-token-shift, --no-feature-loss, --cache-dir, --source, --data-batches, --init, "
                         "--seed and --regen-temperature apply to draft heads (eagle1, eagle3)")
    model_cfg, cfg = preset(args.model, args.steps)
    out = args.out or (Path("runs") / "baseline" / "model" if args.model == "baseline" else None)
    train(args.model, model_cfg, cfg, run_dir=args.run_dir, out_dir=out,
          device=default_device(args.device), command=command)
    if args.model in ("draft", "baseline") and args.out is None:
        table = record_one_layer_losses()
        if table:
            print("recorded in data/target/manifest.json: the one-layer models' validation losses")


def _load(args):
    from . import load_target, load_tokenizer
    from .device import default_device
    return load_target(default_device(args.device)), load_tokenizer()


def _print_generation(tok, prompt, g):
    st = g.stats
    print(prompt + tok.decode(g.tokens))
    print(f"--- {st.new_tokens} tokens in {st.wall_time:.2f} s: {st.tokens_per_s:.1f} tokens/s, "
          f"tau {st.mean_acceptance_length:.2f}, {st.target_calls} target calls")


def cmd_generate(args):
    from .generation import generate
    target, tok = _load(args)
    prompt = (args.prompt.encode("latin-1", "backslashreplace").decode("unicode_escape")
              if args.escapes else args.prompt)
    options = options_from_flags(args, [args.method])[args.method]
    g = generate(target, tok.encode(prompt), args.max_new_tokens, args.temperature, args.top_k,
                 args.top_p, seed=args.seed, eos_id=tok.eot_id, method=args.method,
                 draft=drafts_from_flags([args.method], target).get(args.method), **options)
    _print_generation(tok, prompt, g)


DEMO_METHODS = {"sps": "draft model (ch. 1)", "eagle1": "EAGLE-1 head (ch. 2)"}   # the fastest EAGLE method on a CPU


def cmd_demo(args):
    """Plain decoding against speculative sampling with the draft model and the EAGLE-1 chain
    (the fastest EAGLE method with one CPU thread, README "Measured"), one prompt per domain:
    tokens/s (the median of `--repeats` timings, methods taking turns), speedup, tau, and
    whether the output equals plain greedy decoding's."""
    import statistics
    import textwrap
    from . import load_draft, load_eagle1
    from .data import load_prompts
    from .generation import generate
    from .methods import METHODS
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    target, tok = _load(args)
    drafts = {"ar": None, "sps": load_draft(target.device), "eagle1": load_eagle1(target)}
    names = {"ar": "plain decoding", **{m: f"{m}, {what}, gamma {METHODS[m].defaults()['gamma']}"
                                        for m, what in DEMO_METHODS.items()}}
    print(f"target: {target.num_params():,} parameters; draft model: {drafts['sps'].num_params():,}; "
          f"EAGLE-1 head: {drafts['eagle1'].num_params():,}; on {target.device}; greedy, "
          f"{args.max_new_tokens} new tokens, median of {args.repeats} timings")
    questions = load_prompts(limit=1)
    first = tok.encode(questions[0]["turns"][0])
    for m, d in drafts.items():     # warm-up: first calls pay for allocation and kernel selection
        generate(target, first, 8, method=m, draft=d)
    totals = {m: [0, 0.0] for m in drafts}          # new tokens, seconds (median timings)
    row = "{:44s} {:>9s} {:>8s} {:>6s}  {}"
    for q in questions:
        ids = tok.encode(q["turns"][0])
        runs = {m: [] for m in drafts}
        for _ in range(args.repeats):               # methods take turns, so drift hits all alike
            for m, d in drafts.items():
                runs[m].append(generate(target, ids, args.max_new_tokens, eos_id=tok.eot_id, method=m, draft=d))
        print(f"\n=== {q['category']} ===")
        print(q["turns"][0] + tok.decode(runs["ar"][0].tokens))
        print("---")
        print(row.format("method", "tokens/s", "speedup", "tau", "identical output"))
        base = statistics.median(g.stats.tokens_per_s for g in runs["ar"])
        for m, gens in runs.items():
            tps = statistics.median(g.stats.tokens_per_s for g in gens)
            totals[m][0] += gens[0].stats.new_tokens
            totals[m][1] += statistics.median(g.stats.wall_time for g in gens)
            same = "-" if m == "ar" else str(all(g.tokens == runs["ar"][0].tokens for g in gens))
            print(row.format(names[m], f"{tps:.1f}", f"{tps / base:.2f}x",
                             f"{gens[0].stats.mean_acceptance_length:.2f}", same))
    overall = {m: (n / s) / (totals["ar"][0] / totals["ar"][1]) for m, (n, s) in totals.items() if m != "ar"}
    faster = [f"{m} {x:.2f}x" for m, x in overall.items() if x >= 1]
    slower = [f"{m} {x:.2f}x" for m, x in overall.items() if x < 1]
    print(f"\nall domains: faster than plain decoding: {', '.join(faster) or 'none'}; "
          f"slower: {', '.join(slower) or 'none'}.")
    print(textwrap.fill(
        "Below 1.00x, drafting and verifying cost more than the accepted drafts save: with one CPU "
        "thread a target step is cheap, so a draft must be cheap and often accepted to pay (chapter 1: "
        "the speedup model; chapters 3 and 4: why trees, which draft more, lose on a CPU and win on "
        "a GPU).", 100))


def cmd_bench(args):
    from .bench import format_summary, run_bench
    target, tok = _load(args)
    methods = args.methods.split(",")
    drafts, options = drafts_from_flags(methods, target, args.draft), options_from_flags(args, methods)
    peers = None
    if args.peers:
        if args.peers != "hf":
            raise ValueError(f"--peers: the only peer is 'hf' (transformers), got {args.peers!r}")
        from . import load_draft
        from .methods import METHODS
        from .peers import HFPeers
        gamma = lambda m: options.get(m, {}).get("gamma", METHODS[m].options["gamma"].default)
        peers = HFPeers(target, drafts.get("sps") or load_draft(target.device), gamma("sps"), gamma("pld"),
                        tok.eot_id)      # the same gammas as minispec's sps and pld in this run
    summary = run_bench(target, tok, methods, drafts=drafts,
                        method_options=options, out_dir=args.out,
                        cost_curve_max=args.cost_curve, oracle=args.oracle, peers=peers,
                        suffix_store=not args.no_suffix_store, command="python -m minispec " + " ".join(sys.argv[1:]), **bench_kwargs(args))
    print(format_summary(summary, markdown=args.markdown))
    print(f"wrote {args.out}/summary.json")


def cmd_sweep(args):
    from .bench import gamma_sweep
    target, tok = _load(args)
    methods = args.methods.split(",")
    gammas = [int(g) for g in args.gammas.split(",")]
    result = gamma_sweep(target, tok, methods, gammas, drafts=drafts_from_flags(methods, target),
                         out_path=args.out, **bench_kwargs(args))
    for g, summary in result["runs"].items():
        for m in methods:
            per = summary["methods"][m]
            print(f"gamma {g} {m:4s} " + "  ".join(f"{d}: tau {r['mean_acceptance_length']:.2f} "
                                                     f"x{r['speedup'] or 0:.2f}" for d, r in per.items()))
    print(f"wrote {args.out}")


def cmd_vocab(args):
    import json
    from pathlib import Path
    from .data import DATA_DIR, DOMAINS, load_tokens
    from .distill import SelfDistillation
    from .eagle3 import load_eagle3
    from .eagle3_train import VOCAB_BATCHES, token_counts
    from .studies import vocab_study
    from .train import TrainConfig
    target, tok = _load(args)
    head = load_eagle3(args.head or DATA_DIR / "eagle3", target)
    tokens = {d: load_tokens(d, "train") for d in DOMAINS}
    cfg = TrainConfig()      # the head's training data: the target's continuations, as trained
    data = SelfDistillation(target, tokens, cfg.batch_size, cfg.seq_len, seed=cfg.seed, source="regenerated",
                            cache_dir=args.cache_dir)
    generated = token_counts((data.batch(s).ids[:, data.prompt_len:].cpu().numpy()
                              for s in range(VOCAB_BATCHES)), target.vocab_size)
    rankings = {"gen": generated, "corpus": token_counts(tokens.values(), target.vocab_size)}
    sizes = [int(n) for n in args.sizes.split(",")]
    summary = vocab_study(target, tok, head, sizes, rankings, limit=args.limit,
                          max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    for m, per in summary["methods"].items():
        r = per["all"]
        print(f"{m:18s} coverage {summary['coverage'].get(m, 1.0):.3f}  tau {r['mean_acceptance_length']:.2f}  "
              f"x{r['speedup']:.2f}")
    print(f"wrote {args.out}")


def cmd_ablate(args):
    import json
    from pathlib import Path
    from .checkpoint import read_manifest
    from .eagle import load_eagle1
    from .studies import compare_heads
    target, tok = _load(args)
    heads, trained = {}, {}
    for item in args.heads.split(","):
        name, _, folder = item.partition("=")
        heads[name] = load_eagle1(folder, target)
        info = read_manifest(folder)
        trained[name] = {"command": info["training"]["command"], "val": info["val"],
                         "steps": info["training"]["config"]["steps"],
                         "train_time_s": info["training"]["train_time_s"]}
    result = compare_heads(target, tok, heads, gamma=args.gamma, limit=args.limit,
                           max_new_tokens=args.max_new_tokens)
    result["training"] = trained
    for name, by_temp in result["heads"].items():
        for temp, per in by_temp.items():
            print(f"{name:16s} {temp:6s} " + "  ".join(f"{d}: tau {r['tau']:.2f}" for d, r in per.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


def cmd_replay(args):
    import json
    from pathlib import Path
    from .checkpoint import weights_fingerprint
    from .studies import greedy_outputs, suffix_replays
    try:
        factors = [float(f) for f in args.factors.split(",")]
    except ValueError:
        raise ValueError(f"--factors takes numbers separated by commas, got {args.factors!r}") from None
    from .peers import reference_version
    reference = reference_version() if args.reference else None     # before the greedy decoding
    target, tok = _load(args)
    outputs = greedy_outputs(target, tok, args.max_new_tokens, args.limit)
    rows = suffix_replays(outputs, factors, reference=args.reference)
    for label, per in rows.items():
        print(f"{label:24s} " + "  ".join(f"{d}: tau {r['tau']:.2f}, {r['tokens_per_pass']:.2f}/pass"
                                          for d, r in per.items()))
    result = {"command": "python -m minispec " + " ".join(sys.argv[1:]),
              "weights": {"target": weights_fingerprint(target)}, "max_new_tokens": args.max_new_tokens,
              "settings": {"max_spec_factor": factors, "total_tokens": 16, "max_depth": 24, "min_token_prob": 0.1,
                           "limit": args.limit},
              **({"reference": reference} if reference else {}), "rows": rows, "outputs": outputs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


def cmd_export_hf(args):
    from . import load_tokenizer
    from .checkpoint import load_pretrained
    from .data import DATA_DIR
    from .hf import export_hf
    model = load_pretrained(args.model or DATA_DIR / "target", "cpu")
    export_hf(model, args.out, eos_token_id=load_tokenizer().eot_id)
    print(f"wrote {args.out}/config.json and model.safetensors (Hugging Face Llama format)")


def cmd_grade(args):
    from .grading import print_grade
    print_grade(args.file, args.chapter)


COMMANDS = {"data": cmd_data, "train": cmd_train, "generate": cmd_generate, "demo": cmd_demo,
            "bench": cmd_bench, "sweep": cmd_sweep, "ablate": cmd_ablate, "vocab": cmd_vocab,
            "replay": cmd_replay, "export-hf": cmd_export_hf, "grade": cmd_grade}     # in the order --help lists them


def main(argv=None):
    p = build_parser(__doc__, COMMANDS)
    args = p.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: a clear message, no traceback
        p.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
