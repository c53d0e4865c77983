"""Command line: python -m minispec COMMAND [options]; python -m minispec COMMAND --help for a
command's options."""
from __future__ import annotations

import argparse
import sys


def cmd_data(args):
    from .data import build
    info = build(retrain_tokenizer=not args.keep_tokenizer)
    for k, v in info.items():
        print(f"{k:20s} {v['documents']:6d} documents {v['chars']:>10,d} chars")


def cmd_train(args):
    from pathlib import Path
    from .device import default_device
    from .train import preset, record_one_layer_losses, train
    command = "python -m minispec " + " ".join(sys.argv[1:])
    if args.model == "eagle3":
        from . import load_target
        from .eagle3 import DRAFT_VOCAB, train_eagle3
        if args.no_token_shift or args.no_feature_loss:
            raise ValueError("--no-token-shift and --no-feature-loss are EAGLE-1 ablations; an EAGLE-3 "
                             "head always reads the next token and has no feature loss")
        train_eagle3(load_target(default_device(args.device)), args.out, args.run_dir, args.steps,
                     ttt_steps=args.ttt_steps, draft_vocab_size=args.draft_vocab or DRAFT_VOCAB,
                     vocab_source=args.vocab_source, source=args.source or "regenerated",
                     num_batches=args.data_batches, cache_dir=args.cache_dir, command=command,
                     init=args.init, seed=args.seed, regen_temperature=args.regen_temperature)
        return
    if args.ttt_steps != 7 or args.draft_vocab is not None or args.vocab_source != "data":
        raise ValueError("--ttt-steps, --draft-vocab and --vocab-source apply to the eagle3 head")
    if args.model == "eagle1":
        from . import load_target
        from .eagle import train_eagle1
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
    options = _options(args, [args.method])[args.method]
    g = generate(target, tok.encode(prompt), args.max_new_tokens, args.temperature, args.top_k,
                 args.top_p, seed=args.seed, eos_id=tok.eot_id, method=args.method,
                 draft=_drafts([args.method], target).get(args.method), **options)
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


def _drafts(methods, target, folders=None):
    """The shipped draft model of every method that needs one, and for each METHOD@NAME=FOLDER
    in `folders` (the --draft flag) the one in FOLDER, for that variant alone."""
    from .bench import base_method
    from .methods import get_method
    loaded = {}
    for item in filter(None, (folders or "").split(",")):
        label, eq, folder = item.partition("=")
        if not eq or label not in methods or not get_method(base_method(label)).load_draft:
            raise ValueError(f"--draft {item!r}: expected METHOD=FOLDER for a method that is run and "
                             f"drafts with a model ({', '.join(methods)})")
        loaded[label] = get_method(base_method(label)).load_draft(target, folder)
    for m in methods:                       # the rest draft with the shipped model
        base = base_method(m)
        if m not in loaded and base not in loaded and get_method(base).load_draft:
            loaded[base] = get_method(base).load_draft(target)
    return loaded


def _options(args, methods):
    """The method options given on the command line, per method: each option flag takes VALUE
    (every listed method that has the option) or METHOD=VALUE,METHOD=VALUE..."""
    import re
    from .bench import base_method
    from .methods import METHODS, get_method
    base = lambda m: get_method(base_method(m))
    out = {m: {} for m in methods}
    for name in sorted({o for m in METHODS.values() for o in m.options}):
        text = getattr(args, name, None)
        if text is None:
            continue
        flag = "--" + name.replace("_", "-")
        having = [m for m in methods if name in base(m).options]
        users = [m.name for m in METHODS.values() if name in m.options]
        if "=" in text and base_method(text.split("=")[0]) in METHODS:   # sps=4,pld=6
            items = [item.split("=", 1) for item in re.split(r",(?=[a-z0-9@-]+=)", text)]
        else:
            items = [(m, text) for m in having]
            if not having:
                raise ValueError(f"{flag}: method(s) {', '.join(methods)} take no {name}; it is an "
                                 f"option of {', '.join(users)}")
        for m, v in items:
            if m not in methods or name not in base(m).options:
                raise ValueError(f"{flag} {m}=...: method {m!r} is not run or takes no {name}")
            try:
                out[m][name] = base(m).options[name].parse(v)
            except ValueError as e:
                raise ValueError(f"{flag} takes VALUE or METHOD=VALUE,...; {v!r}: {e}") from None
    return out


def _method_help():
    from .methods import METHODS
    return "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())


def _add_option_flags(parser):
    from .methods import METHODS
    seen = {}
    for m in METHODS.values():
        for name, o in m.options.items():
            seen.setdefault(name, (o, []))[1].append(m.name)
    for name, (o, users) in seen.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name,
                            help=f"{o.help} ({', '.join(users)}): VALUE, or METHOD=VALUE,...")


def _bench_kwargs(args):
    return dict(domains=args.domains.split(",") if args.domains else None, limit=args.limit,
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, seed=args.seed, repeats=args.repeats)


def cmd_bench(args):
    from .bench import format_summary, run_bench
    target, tok = _load(args)
    methods = args.methods.split(",")
    drafts, options = _drafts(methods, target, args.draft), _options(args, methods)
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
                        command="python -m minispec " + " ".join(sys.argv[1:]), **_bench_kwargs(args))
    print(format_summary(summary, markdown=args.markdown))
    print(f"wrote {args.out}/summary.json")


def cmd_sweep(args):
    from .bench import gamma_sweep
    target, tok = _load(args)
    methods = args.methods.split(",")
    gammas = [int(g) for g in args.gammas.split(",")]
    result = gamma_sweep(target, tok, methods, gammas, drafts=_drafts(methods, target),
                         out_path=args.out, **_bench_kwargs(args))
    for g, summary in result["runs"].items():
        for m in methods:
            per = summary["methods"][m]
            print(f"gamma {g} {m:4s} " + "  ".join(f"{d}: tau {r['mean_acceptance_length']:.2f} "
                                                     f"x{r['speedup'] or 0:.2f}" for d, r in per.items()))
    print(f"wrote {args.out}")


def cmd_vocab(args):
    import json
    from pathlib import Path
    from .data import DOMAINS, load_tokens
    from .distill import SelfDistillation
    from .eagle3 import VOCAB_BATCHES, load_eagle3, token_counts, vocab_study
    from .data import DATA_DIR
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
    from .eagle import compare_heads, load_eagle1
    target, tok = _load(args)
    from .checkpoint import read_manifest
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


def cmd_export_hf(args):
    from . import load_tokenizer
    from .checkpoint import load_pretrained
    from .data import DATA_DIR
    from .hf import export_hf
    model = load_pretrained(args.model or DATA_DIR / "target", "cpu")
    export_hf(model, args.out, eos_token_id=load_tokenizer().eot_id)
    print(f"wrote {args.out}/config.json and model.safetensors (Hugging Face Llama format)")


def _sampling_args(s):
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    s.add_argument("--top-k", type=int, default=0, help="0 = off")
    s.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu, cuda, mps (default: CUDA, then MPS, then CPU)")


def cmd_grade(args):
    from .grading import print_grade
    print_grade(args.file, args.chapter)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minispec", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, title="commands")

    s = sub.add_parser("data", help="rebuild the corpus, tokenizer and prompts in data/",
                       description="Rebuild the corpus, the tokenizer and the evaluation prompts in data/.")
    s.add_argument("--keep-tokenizer", action="store_true", help="keep data/tokenizer.json")
    s.set_defaults(func=cmd_data)

    s = sub.add_parser("train", help="train the target, the draft model or a head",
                       description="Train a preset model: target, draft, baseline (the draft's shape on "
                                   "the data alone, the yardstick of the target's losses), or the eagle1 / "
                                   "eagle3 head on the shipped target.")
    s.add_argument("model", choices=["target", "draft", "baseline", "eagle1", "eagle3"])
    s.add_argument("--steps", type=int, help="override the preset's number of steps")
    s.add_argument("--run-dir", help="training state folder (default runs/<model>)")
    s.add_argument("--out", help="shipped folder (default data/<model>)")
    s.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    s.add_argument("--no-token-shift", action="store_true",
                   help="ablation: the head reads (x_t, f_t) instead of (x_{t+1}, f_t)")
    s.add_argument("--no-feature-loss", action="store_true",
                   help="ablation: train the head on the cross-entropy alone")
    s.add_argument("--cache-dir", help="keep the target's outputs here and reuse them (large; not shipped)")
    s.add_argument("--source", choices=["corpus", "regenerated", "mixed"],
                   help="a head's data: corpus windows, the target's own continuations of corpus prefixes, "
                        "or both in turns (eagle1 only) (default: corpus for eagle1, regenerated for eagle3)")
    s.add_argument("--regen-temperature", type=float, default=1.0,
                   help="a head: the temperature the target continues corpus prefixes at, for regenerated "
                        "or mixed data (default 1, its own distribution; 0, its greedy continuations)")
    s.add_argument("--ttt-steps", type=int, default=7,
                   help="eagle3: training-time test, the head unrolled this many steps (default 7)")
    s.add_argument("--draft-vocab", type=int,
                   help="eagle3: size of the draft vocabulary (default minispec.eagle3.DRAFT_VOCAB)")
    s.add_argument("--vocab-source", choices=["data", "corpus"], default="data",
                   help="eagle3: rank tokens by frequency in the training data (the target's own "
                        "continuations) or in the corpus")
    s.add_argument("--init", metavar="FOLDER", help="a head: start from this trained head (a warm restart: "
                   "the schedule runs again; give a new --seed so that it sees new data)")
    s.add_argument("--seed", type=int, help="a head: the run's seed, which also picks its data (default 0)")
    s.add_argument("--data-batches", type=int,
                   help="a head's amount of data: this many distinct batches, repeated in epochs (default: a new batch every step)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("generate", help="continue a prompt with the shipped target",
                       description="Continue a prompt with the shipped target and any method.")
    s.add_argument("--prompt", required=True)
    s.add_argument("--escapes", action="store_true", help="read \\n etc. in --prompt as escapes")
    s.add_argument("--method", default="ar", help=_method_help())
    _add_option_flags(s)
    _sampling_args(s)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("demo", help="plain decoding, sps and EAGLE-1, one prompt per domain",
                       description=cmd_demo.__doc__)
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--repeats", type=int, default=3, help="time every generation N times; report medians")
    s.add_argument("--device")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("bench", help="benchmark methods on the evaluation prompts",
                       description="Benchmark methods on the evaluation prompts: tokens/s, speedup, tau, "
                                   "lossless (docs/benchmark.md).")
    s.add_argument("--methods", default="ar", help="comma-separated, e.g. ar,sps,pld; " + _method_help())
    s.add_argument("--domains", help=f"comma-separated subset of the domains (default: all)")
    s.add_argument("--limit", type=int, help="prompts per domain (default: all)")
    s.add_argument("--out", default="results/bench")
    _add_option_flags(s)
    s.add_argument("--draft", help="METHOD=FOLDER,...: a method (or variant METHOD@NAME) drafts with the model "
                                   "in FOLDER instead of the shipped one, e.g. eagle3@k1=runs/eagle3-k1/out")
    s.add_argument("--repeats", type=int, default=1, help="time every generation N times; report medians")
    s.add_argument("--peers", help="hf: also run transformers' generate, assisted generation (the draft model "
                                   "as assistant, its default schedule and sps's gamma) and prompt lookup on the "
                                   "exported weights, side by side (needs transformers)")
    s.add_argument("--oracle", action="store_true",
                   help="also run the oracle (the target's own greedy continuation, drafted for free) at each "
                        "method's budget, and report each method's speedup as a fraction of it")
    s.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    s.add_argument("--cost-curve", type=int, default=0, metavar="N",
                   help="also measure the target's forward cost T(n) for n = 1..N (verifying a tree of N-1 nodes)")
    _sampling_args(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("sweep", help="the benchmark at several gammas (chapter 1)",
                       description="The benchmark at several gammas (chapter 1's experiment).")
    s.add_argument("--methods", default="sps,pld")
    s.add_argument("--gammas", default="1,2,3,4,5,6,8")
    s.add_argument("--domains")
    s.add_argument("--limit", type=int, default=5)
    s.add_argument("--out", default="results/gamma_sweep.json")
    s.add_argument("--draft", help="METHOD=FOLDER,...: a method (or variant METHOD@NAME) drafts with the model "
                                   "in FOLDER instead of the shipped one, e.g. eagle3@k1=runs/eagle3-k1/out")
    s.add_argument("--repeats", type=int, default=1, help="time every generation N times; report medians")
    _sampling_args(s)
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("ablate", help="compare EAGLE-1 heads by tau (chapter 2)",
                       description="Compare EAGLE-1 heads by tau (chapter 2's ablations).")
    s.add_argument("--heads", default="full=runs/ablation-full/model,no-token-shift=runs/ablation-noshift/model,"
                                      "no-feature-loss=runs/ablation-nofeature/model",
                   help="NAME=FOLDER,... of heads trained with python -m minispec train eagle1 [--no-...]")
    s.add_argument("--gamma", type=int, default=4)
    s.add_argument("--limit", type=int, default=5, help="prompts per domain")
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--out", default="results/ablations.json")
    s.add_argument("--device")
    s.set_defaults(func=cmd_ablate)

    s = sub.add_parser("vocab", help="EAGLE-3's draft vocabulary trade-off (chapter 5)",
                       description="The EAGLE-3 head's draft vocabulary cut to its most frequent tokens by "
                                   "the target's outputs or by the corpus: coverage, tau, speed (chapter 5).")
    s.add_argument("--sizes", default="256,512,1024,2048")
    s.add_argument("--head", help="the EAGLE-3 head's folder (default data/eagle3)")
    s.add_argument("--limit", type=int, default=10, help="prompts per domain")
    s.add_argument("--repeats", type=int, default=1)
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--cache-dir", help="the target's outputs, as kept by train --cache-dir (else regenerated)")
    s.add_argument("--out", default="results/vocab.json")
    s.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    s.set_defaults(func=cmd_vocab)

    s = sub.add_parser("export-hf", help="export a model to the Hugging Face Llama format",
                       description="Export a model folder to the Hugging Face Llama format.")
    s.add_argument("--model", help="a model folder (default: the shipped target, wherever minispec is installed)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export_hf)

    s = sub.add_parser("grade", help="grade a student's notebook or module with the exercise checkers (the assignments' points)")
    s.add_argument("file", help="a notebook (.ipynb) or a Python module (.py) that defines the exercise functions")
    s.add_argument("--chapter", type=int, help="grade this chapter's exercises (default: those the file defines)")
    s.set_defaults(func=cmd_grade)

    args = p.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: a clear message, no traceback
        p.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
