"""The tiny world: the math generator, the play converter, the shipped prompts and sample."""
import random
import re

import minispec
from minispec.data import DOMAINS, load_prompts, load_sample, math_problem, play_to_text


def test_math_problems_are_deterministic_and_correct():
    a = [math_problem(random.Random(5)) for _ in range(3)]
    assert a == [math_problem(random.Random(5)) for _ in range(3)]
    rng = random.Random(0)
    for _ in range(300):
        text = math_problem(rng)
        for x, op, y, z in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", text):
            assert eval(f"{x} {op} {y}") == int(z), text
        last = re.findall(r"= (\d+)", text)[-1]
        assert text.rstrip().endswith(f"The answer is {last}.")


def test_play_markdown_becomes_a_plain_script():
    md = "# Macbeth\n\n## ACT I\n\n_Thunder. Enter three Witches_\n\n**First Witch**  \nWhen shall we three meet again  \n"
    assert play_to_text(md) == "Macbeth\n\nACT I\n\n[Thunder. Enter three Witches]\n\nFirst Witch:\nWhen shall we three meet again\n"


def test_shipped_prompts_follow_spec_bench_format():
    qs = load_prompts()
    assert len(qs) == 60
    assert [q["question_id"] for q in qs] == list(range(1, 61))
    for q in qs:
        assert set(q) == {"question_id", "category", "turns"}
        assert q["category"] in DOMAINS and len(q["turns"]) == 1 and q["turns"][0]
    assert {d: sum(q["category"] == d for q in qs) for d in DOMAINS} == {d: 20 for d in DOMAINS}
    assert [q["category"] for q in load_prompts(limit=2)] == ["shakespeare"] * 2 + ["python"] * 2 + ["math"] * 2


def test_prompts_fit_the_context_with_room_to_generate():
    tok = minispec.load_tokenizer()
    assert max(len(tok.encode(q["turns"][0])) for q in load_prompts()) + 128 < 512


def test_shipped_sample_covers_every_domain():
    for split in ("train", "val"):
        s = load_sample(split)
        assert set(s) == set(DOMAINS)
        assert all(len(v) > 1000 and int(v.max()) < 4096 for v in s.values())
