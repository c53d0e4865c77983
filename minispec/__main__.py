"""Command line: python -m minispec {data,train,generate,bench,export-hf} ..."""
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
    model_cfg, cfg = preset(args.model, args.steps)
    out = args.out or (Path("runs") / "baseline" / "model" if args.model == "baseline" else None)
    train(args.model, model_cfg, cfg, run_dir=args.run_dir, out_dir=out,
          device=default_device(args.device), command="python -m minispec " + " ".join(sys.argv[1:]))
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
    if args.gamma is not None and args.method == "ar":
        raise ValueError("--gamma sets the draft length of a speculative method (sps, pld); "
                         "method ar drafts nothing")
    options = _gammas(None if args.gamma is None else str(args.gamma), [args.method]).get(args.method, {})
    g = generate(target, tok.encode(prompt), args.max_new_tokens, args.temperature, args.top_k,
                 args.top_p, seed=args.seed, eos_id=tok.eot_id, method=args.method,
                 drafter=_drafters([args.method], target).get(args.method), **options)
    _print_generation(tok, prompt, g)


def cmd_demo(args):
    from . import load_draft
    from .data import load_prompts
    from .generation import generate
    from .speculative import DEFAULT_GAMMA
    target, tok = _load(args)
    draft = load_draft(target.device)
    print(f"target: {target.num_params():,} parameters, draft: {draft.num_params():,}, on {target.device}")
    questions = load_prompts(limit=1)
    for method in ("ar", "sps"):  # warm-up
        generate(target, tok.encode(questions[0]["turns"][0]), 8, method=method,
                 drafter=draft if method == "sps" else None)
    for q in questions:
        print(f"\n=== {q['category']} ===")
        ids = tok.encode(q["turns"][0])
        ar = generate(target, ids, args.max_new_tokens, eos_id=tok.eot_id)
        _print_generation(tok, q["turns"][0], ar)
        sps = generate(target, ids, args.max_new_tokens, eos_id=tok.eot_id, method="sps", drafter=draft,
                       gamma=DEFAULT_GAMMA["sps"])
        print(f"--- speculative decoding with the draft model (gamma {DEFAULT_GAMMA['sps']}): {sps.stats.tokens_per_s:.1f} tokens/s, "
              f"{sps.stats.tokens_per_s / ar.stats.tokens_per_s:.2f}x, tau {sps.stats.mean_acceptance_length:.2f}, "
              f"identical output: {sps.tokens == ar.tokens}")


def _drafters(methods, target):
    from . import load_draft
    return {"sps": load_draft(target.device)} if "sps" in methods else {}


def _gammas(text, methods):
    """'4' (every method) or 'sps=4,pld=6' -> {method: {"gamma": g}}."""
    from .speculative import DEFAULT_GAMMA
    per = dict(DEFAULT_GAMMA)
    try:
        if text and "=" in text:
            for item in text.split(","):
                m, g = item.split("=")
                if m not in per:
                    raise ValueError(f"no gamma for method {m!r}; methods with drafts: {sorted(per)}")
                per[m] = int(g)
        elif text:
            per = {m: int(text) for m in per}
    except ValueError as e:
        raise ValueError(f"--gamma takes N or METHOD=N,...: {e}") from None
    return {m: {"gamma": per[m]} for m in methods if m in per}


def _bench_kwargs(args):
    return dict(domains=args.domains.split(",") if args.domains else None, limit=args.limit,
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, seed=args.seed, repeats=args.repeats)


def cmd_bench(args):
    from .bench import format_summary, run_bench
    target, tok = _load(args)
    methods = args.methods.split(",")
    summary = run_bench(target, tok, methods, drafters=_drafters(methods, target),
                        method_options=_gammas(args.gamma, methods), out_dir=args.out, **_bench_kwargs(args))
    print(format_summary(summary, markdown=args.markdown))
    print(f"wrote {args.out}/summary.json")


def cmd_sweep(args):
    from .bench import gamma_sweep
    target, tok = _load(args)
    methods = args.methods.split(",")
    gammas = [int(g) for g in args.gammas.split(",")]
    result = gamma_sweep(target, tok, methods, gammas, drafters=_drafters(methods, target),
                         out_path=args.out, **_bench_kwargs(args))
    for g, summary in result["runs"].items():
        for m in methods:
            per = summary["methods"][m]
            print(f"gamma {g} {m:4s} " + "  ".join(f"{d}: tau {r['mean_acceptance_length']:.2f} "
                                                     f"x{r['speedup'] or 0:.2f}" for d, r in per.items()))
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


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minispec", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("data", help="rebuild the corpus, tokenizer and prompts in data/")
    s.add_argument("--keep-tokenizer", action="store_true", help="keep data/tokenizer.json")
    s.set_defaults(func=cmd_data)

    s = sub.add_parser("train", help="train a preset model: target, draft, or baseline (the draft's shape "
                                     "on the data alone, the yardstick of the target's losses)")
    s.add_argument("model", choices=["target", "draft", "baseline"])
    s.add_argument("--steps", type=int, help="override the preset's number of steps")
    s.add_argument("--run-dir", help="training state folder (default runs/<model>)")
    s.add_argument("--out", help="shipped folder (default data/<model>)")
    s.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("generate", help="continue a prompt with the shipped target")
    s.add_argument("--prompt", required=True)
    s.add_argument("--escapes", action="store_true", help="read \\n etc. in --prompt as escapes")
    s.add_argument("--method", default="ar", help="ar (default), sps (with the shipped draft) or pld")
    s.add_argument("--gamma", type=int, help="draft tokens per round (sps, pld)")
    _sampling_args(s)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("demo", help="one prompt per domain, with the decoding speed")
    s.add_argument("--max-new-tokens", type=int, default=96)
    s.add_argument("--device")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("bench", help="benchmark methods on the evaluation prompts")
    s.add_argument("--methods", default="ar", help="comma-separated, e.g. ar,sps,pld")
    s.add_argument("--domains", help=f"comma-separated subset of the domains (default: all)")
    s.add_argument("--limit", type=int, help="prompts per domain (default: all)")
    s.add_argument("--out", default="results/bench")
    s.add_argument("--gamma", help="draft tokens per round: N for every method, or sps=4,pld=6")
    s.add_argument("--repeats", type=int, default=1, help="time every generation N times; report medians")
    s.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    _sampling_args(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("sweep", help="the benchmark at several gammas (chapter 1's experiment)")
    s.add_argument("--methods", default="sps,pld")
    s.add_argument("--gammas", default="1,2,3,4,5,6,8")
    s.add_argument("--domains")
    s.add_argument("--limit", type=int, default=5)
    s.add_argument("--out", default="results/gamma_sweep.json")
    s.add_argument("--repeats", type=int, default=1, help="time every generation N times; report medians")
    _sampling_args(s)
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("export-hf", help="export a model folder to the Hugging Face Llama format")
    s.add_argument("--model", help="a model folder (default: the shipped target, wherever minispec is installed)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export_hf)

    args = p.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: a clear message, no traceback
        p.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
