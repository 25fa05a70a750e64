#!/usr/bin/env python
"""Copy-task conversations for `verispec train-head --data`: prompts about made-up people, organisations and
places (random syllable names, nothing to memorise), answered greedily by the embedded target, so that its
answers copy spans a head cannot have seen (docs/speed.md §11: a head trained on them did not copy better on
Spec-Bench; kept to reproduce that).

Usage: PYTHONPATH=src python scripts/copy_task_data.py N OUT.pt [SEED]   (1,440 prompts: ~7 min on 2 cores)
"""
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from verispec.draft.head_data import TOPICS, answer, load_target  # noqa: E402

N, OUT = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(2)
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
ONS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch", "dr",
       "gr", "kr", "sh", "st", "th", "tr", "v", "qu", "bl", "fl", "pl"]
NUC = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "ie", "y"]
COD = ["", "", "", "n", "r", "l", "s", "th", "m", "x", "rd", "nt", "sk"]


def word(lo=1, hi=3):
    return "".join(rng.choice(ONS) + rng.choice(NUC) + rng.choice(COD) for _ in range(rng.randint(lo, hi))).capitalize()


JOBS = ["engineer", "teacher", "doctor", "designer", "researcher", "manager", "chef", "pilot", "writer", "lawyer",
        "analyst", "nurse", "architect", "scientist", "farmer", "librarian"]
ORGS = ["Labs", "Group", "Institute", "Industries", "Foundation", "Systems", "Clinic", "University", "Studio", "Bank"]


def entity():
    return {"p": f"{word()} {word()}", "org": f"{word()} {rng.choice(ORGS)}", "city": word(2, 3),
            "job": rng.choice(JOBS), "year": rng.randint(1975, 2024), "n": rng.randint(3, 60),
            "topic": rng.choice(TOPICS), "thing": f"the {word()} {rng.choice(['project', 'plan', 'report', 'method', 'award'])}"}


FACTS = ["{p} is a {job} at {org} in {city}.", "{p} joined {org} in {year} and now leads a team of {n} people.",
         "At {org}, {p} works on {topic}.", "{p} is known for {thing}, which started in {city} in {year}.",
         "{org} is based in {city} and employs {n} people.", "In {year}, {p} moved to {city} to work on {thing}."]


def passage(k):
    es = [entity() for _ in range(k)]
    sents = []
    for e in es:
        sents += [f.format(**e) for f in rng.sample(FACTS, rng.randint(2, 4))]
    rng.shuffle(sents)
    return es, " ".join(sents)


TASKS = ("Summarize the following text.\n\n{t}", "{t}\n\nSummarize the text above in two sentences.",
         "Read the text and answer the question.\n\n{t}\n\nQuestion: Where does {p} work?",
         "Read the text and answer the question.\n\n{t}\n\nQuestion: What is {p} known for?",
         "List every person mentioned in the text below, with their job.\n\n{t}",
         "Extract the names of all organisations and cities from this text, as a list.\n\n{t}",
         "Rewrite the following text in simpler words.\n\n{t}", "Write a short email to {p} at {org} about {thing}.",
         "Based on this document, who leads the team at {org}?\n\nDocument: {t}",
         "Write a short news article about {p}, a {job} from {city}.",
         "Turn this text into a bulleted list of facts.\n\n{t}", 'Repeat the following sentence exactly: "{s}."')
prompts = []
for i in range(N):
    es, t = passage(rng.randint(1, 3))
    prompts.append(TASKS[i % len(TASKS)].format(t=t, s=t.split(". ")[0], **es[0]))
print(prompts[0], "\n---\n", prompts[5], flush=True)
model, tok = load_target()
t0 = time.time()
convs = answer(model, tok, prompts, 128, False)
torch.save(convs, OUT)
print("answered", len(convs), "in", time.time() - t0, "s; tokens", sum(len(c[0]) for c in convs))
print(tok.decode(convs[2][0][convs[2][1]:]))
print(tok.decode(convs[4][0][convs[4][1]:]))
