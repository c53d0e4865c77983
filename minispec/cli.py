"""The command line's flags: `build_parser` (one small builder per command) and what the flags
shared by several commands mean: method options (`options_from_flags`), draft models
(`drafts_from_flags`) and the benchmark's settings (`bench_kwargs`). The commands themselves
are in minispec.__main__.
"""
from __future__ import annotations

import argparse
import re

from .bench import base_method
from .eagle3_train import TTT_STEPS
from .methods import METHODS, get_method

DRAFT_HELP = ("METHOD=FOLDER,...: a method (or variant METHOD@NAME) drafts with the model "
              "in FOLDER instead of the shipped one, e.g. eagle3@k1=runs/eagle3-k1/out")
REPEATS_HELP = "time every generation N times; report medians"


def build_parser(description: str, commands: dict) -> argparse.ArgumentParser:
    """`python -m minispec`'s parser: one subcommand per entry of `commands` (name -> the function
    that runs it, as args.func), in that order, each with the arguments its builder adds."""
    p = argparse.ArgumentParser(prog="python -m minispec", description=description)
    sub = p.add_subparsers(dest="command", required=True, title="commands")
    for name, run in commands.items():
        SUBCOMMANDS[name](sub)          # adds the subcommand's parser, sub.choices[name], and its arguments
        s = sub.choices[name]
        if s.description is None:       # a command without its own description: its function's docstring
            s.description = run.__doc__
        s.set_defaults(func=run)
    return p


def add_data(sub):
    s = sub.add_parser("data", help="rebuild the corpus, tokenizer and prompts in data/",
                       description="Rebuild the corpus, the tokenizer and the evaluation prompts in data/.")
    s.add_argument("--keep-tokenizer", action="store_true", help="keep data/tokenizer.json")


def add_train(sub):
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
    s.add_argument("--ttt-steps", type=int, default=TTT_STEPS,
                   help=f"eagle3: training-time test, the head unrolled this many steps (default {TTT_STEPS})")
    s.add_argument("--draft-vocab", type=int,
                   help="eagle3: size of the draft vocabulary (default minispec.eagle3_train.DRAFT_VOCAB)")
    s.add_argument("--vocab-source", choices=["data", "corpus"], default="data",
                   help="eagle3: rank tokens by frequency in the training data (the target's own "
                        "continuations) or in the corpus")
    s.add_argument("--init", metavar="FOLDER", help="a head: start from this trained head (a warm restart: "
                   "the schedule runs again; give a new --seed so that it sees new data)")
    s.add_argument("--seed", type=int, help="a head: the run's seed, which also picks its data (default 0)")
    s.add_argument("--data-batches", type=int,
                   help="a head's amount of data: this many distinct batches, repeated in epochs (default: a new batch every step)")


def add_generate(sub):
    s = sub.add_parser("generate", help="continue a prompt with the shipped target",
                       description="Continue a prompt with the shipped target and any method.")
    s.add_argument("--prompt", required=True)
    s.add_argument("--escapes", action="store_true", help="read \\n etc. in --prompt as escapes")
    s.add_argument("--method", default="ar", help=method_help())
    add_option_flags(s)
    add_sampling_args(s)


def add_demo(sub):
    s = sub.add_parser("demo", help="plain decoding, sps and EAGLE-1, one prompt per domain")
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--repeats", type=int, default=3, help=REPEATS_HELP)
    s.add_argument("--device")


def add_bench(sub):
    s = sub.add_parser("bench", help="benchmark methods on the evaluation prompts",
                       description="Benchmark methods on the evaluation prompts: tokens/s, speedup, tau, "
                                   "lossless (docs/benchmark.md).")
    s.add_argument("--methods", default="ar", help="comma-separated, e.g. ar,sps,pld; " + method_help())
    s.add_argument("--domains", help="comma-separated subset of the domains (default: all)")
    s.add_argument("--limit", type=int, help="prompts per domain (default: all)")
    s.add_argument("--out", default="results/bench")
    add_option_flags(s)
    s.add_argument("--draft", help=DRAFT_HELP)
    s.add_argument("--repeats", type=int, default=1, help=REPEATS_HELP)
    s.add_argument("--peers", help="hf: also run transformers' generate, assisted generation (the draft model "
                                   "as assistant, its default schedule and sps's gamma) and prompt lookup on the "
                                   "exported weights, side by side (needs transformers)")
    s.add_argument("--oracle", action="store_true",
                   help="also run the oracle (the target's own greedy continuation, drafted for free) at each "
                        "method's budget, and report each method's speedup as a fraction of it")
    s.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    s.add_argument("--no-suffix-store", action="store_true",
                   help="suffix and hybrid draft from the request only (default: also from the outputs of "
                        "the earlier prompts of the same pass, SuffixDecoding's global tree)")
    s.add_argument("--cost-curve", type=int, default=0, metavar="N",
                   help="also measure the target's forward cost T(n) for n = 1..N (verifying a tree of N-1 nodes)")
    add_sampling_args(s)


def add_sweep(sub):
    s = sub.add_parser("sweep", help="the benchmark at several gammas (chapter 1)",
                       description="The benchmark at several gammas (chapter 1's experiment).")
    s.add_argument("--methods", default="sps,pld")
    s.add_argument("--gammas", default="1,2,3,4,5,6,8")
    s.add_argument("--domains")
    s.add_argument("--limit", type=int, default=5)
    s.add_argument("--out", default="results/gamma_sweep.json")
    s.add_argument("--draft", help=DRAFT_HELP)
    s.add_argument("--repeats", type=int, default=1, help=REPEATS_HELP)
    add_sampling_args(s)


def add_ablate(sub):
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


def add_vocab(sub):
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


def add_export_hf(sub):
    s = sub.add_parser("export-hf", help="export a model to the Hugging Face Llama format",
                       description="Export a model folder to the Hugging Face Llama format.")
    s.add_argument("--model", help="a model folder (default: the shipped target, wherever minispec is installed)")
    s.add_argument("--out", required=True)


def add_grade(sub):
    s = sub.add_parser("grade", help="grade a student's notebook or module with the exercise graders (the assignments' points)")
    s.add_argument("file", help="a notebook (.ipynb) or a Python module (.py) that defines the exercise functions")
    s.add_argument("--chapter", type=int, help="grade this chapter's exercises (default: those the file defines)")


def add_replay(sub):
    s = sub.add_parser("replay", help="SuffixDecoding replayed on the greedy outputs (chapter 6)",
                       description="Plain greedy decoding of every evaluation prompt, then prompt lookup and the "
                                   "suffix drafter replayed on those outputs (no target passes: the method is "
                                   "lossless) with the request only, the outputs before it, and the same task "
                                   "again; with --reference also ArcticInference's suffix trees (chapter 6).")
    s.add_argument("--factors", default="1,2,4", help="max_spec_factor values")
    s.add_argument("--reference", action="store_true", help="also the reference implementation (arctic-inference)")
    s.add_argument("--limit", type=int, help="prompts per domain (default: all)")
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--out", default="results/replay.json")
    s.add_argument("--device", help="cpu, cuda, mps (default: best available)")


SUBCOMMANDS = {"data": add_data, "train": add_train, "generate": add_generate, "demo": add_demo,
               "bench": add_bench, "sweep": add_sweep, "ablate": add_ablate, "vocab": add_vocab,
               "replay": add_replay, "export-hf": add_export_hf, "grade": add_grade}


def add_sampling_args(s):
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    s.add_argument("--top-k", type=int, default=0, help="0 = off")
    s.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu, cuda, mps (default: CUDA, then MPS, then CPU)")


def method_help():
    return "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())


def add_option_flags(parser):
    """One flag per method option (--gamma, --choices, ...), naming the methods that take it."""
    seen = {}
    for m in METHODS.values():
        for name, o in m.options.items():
            seen.setdefault(name, (o, []))[1].append(m.name)
    for name, (o, users) in seen.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name,
                            help=f"{o.help} ({', '.join(users)}): VALUE, or METHOD=VALUE,...")


def options_from_flags(args, methods):
    """The method options given on the command line, per method: each option flag takes VALUE
    (every listed method that has the option) or METHOD=VALUE,METHOD=VALUE..."""
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


def drafts_from_flags(methods, target, folders=None):
    """The shipped draft model of every method that needs one, and for each METHOD@NAME=FOLDER
    in `folders` (the --draft flag) the one in FOLDER, for that variant alone."""
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


def bench_kwargs(args):
    """run_bench's settings from the flags bench and sweep share."""
    return dict(domains=args.domains.split(",") if args.domains else None, limit=args.limit,
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, seed=args.seed, repeats=args.repeats)
