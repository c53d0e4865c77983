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
    from .device import default_device
    from .train import preset, train
    model_cfg, cfg = preset(args.model, args.steps)
    train(args.model, model_cfg, cfg, run_dir=args.run_dir, out_dir=args.out,
          device=default_device(args.device), command="python -m minispec " + " ".join(sys.argv[1:]))


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
    from .generate import generate
    target, tok = _load(args)
    prompt = args.prompt.encode().decode("unicode_escape") if args.escapes else args.prompt
    g = generate(target, tok.encode(prompt), args.max_new_tokens, args.temperature, args.top_k,
                 args.top_p, seed=args.seed, eos_id=tok.eot_id, method=args.method)
    _print_generation(tok, prompt, g)


def cmd_demo(args):
    from .data import load_prompts
    from .generate import generate
    target, tok = _load(args)
    print(f"target: {target.num_params():,} parameters on {target.device}")
    questions = load_prompts(limit=1)
    generate(target, tok.encode(questions[0]["turns"][0]), 8)  # warm-up
    for q in questions:
        print(f"\n=== {q['category']} ===")
        prompt = q["turns"][0]
        _print_generation(tok, prompt, generate(target, tok.encode(prompt), args.max_new_tokens,
                                                eos_id=tok.eot_id))


def cmd_bench(args):
    from .bench import format_summary, run_bench
    target, tok = _load(args)
    summary = run_bench(target, tok, args.methods.split(","),
                        domains=args.domains.split(",") if args.domains else None, limit=args.limit,
                        max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, seed=args.seed, out_dir=args.out)
    print(format_summary(summary))
    print(f"wrote {args.out}/summary.json")


def cmd_export_hf(args):
    from . import load_tokenizer
    from .checkpoint import load_pretrained
    from .hf import export_hf
    model = load_pretrained(args.model, "cpu")
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

    s = sub.add_parser("train", help="train a preset model (target or draft)")
    s.add_argument("model", choices=["target", "draft"])
    s.add_argument("--steps", type=int, help="override the preset's number of steps")
    s.add_argument("--run-dir", help="training state folder (default runs/<model>)")
    s.add_argument("--out", help="shipped folder (default data/<model>)")
    s.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("generate", help="continue a prompt with the shipped target")
    s.add_argument("--prompt", required=True)
    s.add_argument("--escapes", action="store_true", help="read \\n etc. in --prompt as escapes")
    s.add_argument("--method", default="ar", help="ar (default)")
    _sampling_args(s)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("demo", help="one prompt per domain, with the decoding speed")
    s.add_argument("--max-new-tokens", type=int, default=96)
    s.add_argument("--device")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("bench", help="benchmark methods on the evaluation prompts")
    s.add_argument("--methods", default="ar", help="comma-separated, e.g. ar")
    s.add_argument("--domains", help=f"comma-separated subset of the domains (default: all)")
    s.add_argument("--limit", type=int, help="prompts per domain (default: all)")
    s.add_argument("--out", default="results/bench")
    _sampling_args(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("export-hf", help="export a model folder to the Hugging Face Llama format")
    s.add_argument("--model", default="data/target")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export_hf)

    args = p.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: a clear message, no traceback
        p.exit(2, f"error: {e}\n")
    args.func(args)


if __name__ == "__main__":
    main()
