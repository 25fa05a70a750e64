"""Training data for a feature-level draft head: the target's own answers to synthetic prompts.

EAGLE (Li et al. 2024, arXiv 2401.15077) trains its head on a fixed chat corpus; Medusa-2 and
EAGLE's follow-ups note that the target's *own* outputs (self-distillation) match what the head
must predict at inference. No corpus ships here, and Spec-Bench's prompts are for evaluation only,
so the prompts are built from hand-written task templates x topics (the Spec-Bench categories:
writing, roleplay, reasoning, math, coding, extraction, STEM, humanities, translation,
summarization, QA, RAG), and the long inputs of summarization / RAG / translation / extraction
prompts are passages the target itself wrote in a first round. The target then answers every
prompt (greedy for most, sampled at T = 1 for the rest), in batches through ``generate``. A third
of the first round's requests are written by the target itself (`self_instruct`). A third round
(`third_round`) covers forms users write that templates miss: requests the target writes to order
(short trivia questions, multi-step word problems, tasks), and "Translate <language> to English:"
around the target's own translations from the second round (back-translation). A passage round
(`passage_round`) wraps passages of human-written text (the documentation that ships with Python
itself: docstrings and the language reference's topics, so every machine has the same corpus) in
summarization / question / extraction / quoting prompts: text the target did not write, which the
head can only continue by copying from the prompt, as on real RAG and summarization requests.

Output: a list of (token ids of prompt + answer, prompt length) pairs; `features` adds the
target's final hidden states, which is what the head learns to continue.
"""
from __future__ import annotations

import ast
import os
import random
import re
import sysconfig

import torch

TOPICS = (
    "photosynthesis", "the French Revolution", "black holes", "machine learning", "climate change",
    "the Roman Empire", "vaccines", "volcanoes", "the stock market", "renewable energy", "the human heart",
    "coffee", "the Internet", "honey bees", "the Moon landing", "chess", "electric cars", "sleep",
    "the Great Wall of China", "recycling", "inflation", "DNA", "the Olympic Games", "jazz music",
    "earthquakes", "the printing press", "social media", "rainforests", "gravity", "meditation",
    "ancient Egypt", "antibiotics", "cloud computing", "the water cycle", "Shakespeare", "tea",
    "the immune system", "bridges", "the Renaissance", "solar panels", "dinosaurs", "banking",
    "the ocean tides", "democracy", "cryptography", "marathon running", "the periodic table",
    "urban gardening", "the Industrial Revolution", "bread baking", "smartphones", "glaciers",
    "the Silk Road", "nutrition", "robots", "the Amazon river", "public libraries", "airplanes",
    "World War I", "quantum computing", "bicycles", "the solar system", "microplastics", "the brain",
    "time management", "wolves", "the Cold War", "3D printing", "volunteering", "the Sahara desert",
)
WRITING = ("Write a short blog post about {t}.", "Write a poem about {t}.", "Write a short story involving {t}.",
           "Write an email to a friend about {t}.", "Write a persuasive paragraph about {t}.",
           "Write a short paragraph about {t}.", "Write a news article about {t}.")
ASKING = ("What is {t}?", "Explain {t} in simple terms.", "Give three interesting facts about {t}.",
          "Why is {t} important?", "What are the pros and cons of {t}?", "Describe the history of {t}.",
          "How does {t} affect everyday life?", "Pretend you are a tour guide. Tell visitors about {t}.",
          "Imagine you are a teacher. Explain {t} to a class of ten-year-olds.",
          "Compare {t} and {u}.", "What questions would a student ask about {t}? Answer two of them.")
CODING = ("Write a Python function that reverses a string.", "Write a Python function to check whether a number is prime.",
          "Write a Python function that returns the n-th Fibonacci number.", "Write a JavaScript function that sums an array.",
          "Write a Python class for a bank account with deposit and withdraw methods.",
          "Write a SQL query that selects all users older than 30.", "Write a Python function to sort a list of dictionaries by a key.",
          "Explain what a hash table is and write a small example in Python.", "Write a Python function that counts words in a text.",
          "Write a C function that computes the factorial of a number.", "Write a Python script that reads a CSV file and prints each row.")
CONTEXT = ("{p}\n\nSummarize the text above in a few sentences.", "Summarize the following article:\n\n{p}",
           "Summarize: {p}", "{p}\n\nQuestion: Who or what is {t} according to the text?",
           "Context: {p}\n\nQuestion: What does the text say about {t}? Answer using the context.",
           "Read the passage and answer the question.\n\nPassage: {p}\n\nQuestion: What is the main idea of the passage?",
           "Extract the key points from the following text as a bulleted list:\n\n{p}",
           "Translate the following text to {lang}:\n\n{s}", "Translate to {lang}: {s}",
           "Rewrite the following text in simpler words:\n\n{p}")
LANGS = ("French", "Spanish", "German", "Italian", "Portuguese")
ASK_FOR = ("Write one short trivia question about {t}. Write only the question.",
           "Write a math word problem about {t} that takes two or three steps to solve. Write only the problem.",
           "Write a request a user might send to an AI assistant about {t}. Write only the request.")
PASSAGE_TASKS = (
    "{p}\n\nSummarize the text above in a few sentences.", "Summarize the following text:\n\n{p}",
    "Summarize: {p}", "Write a one-paragraph summary of this documentation:\n\n{p}",
    "Context: {p}\n\nQuestion: What does the text say about {t}? Answer using the context.",
    "{p}\n\nBased on the passage above, explain {t}.",
    "Extract the key points from the following text as a bulleted list:\n\n{p}",
    "Quote the sentence of the following text that mentions {t}, then explain it.\n\n{p}",
    "Rewrite the following text in simpler words:\n\n{p}",
    "{docs}\n\nAnswer the question using the documents above. Question: What is {t}?")
_TRANSLATED = re.compile(r"Translate (?:the following text )?to (\w+):")


def math_prompt(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 20)
    return rng.choice((
        f"What is {a} + {b} * {c}?", f"Solve for x: {c}x + {a} = {a + b * c}.",
        f"A train travels {a * c} km in {c} hours. What is its average speed?",
        f"Tom has {a} apples and gives away {min(a, b)}. Then he buys {c} more. How many apples does he have?",
        f"A shop sells pens at ${c} each. How much do {a} pens cost? Explain step by step.",
        f"What is {c}% of {a * 10}?", f"A rectangle is {a} cm long and {c} cm wide. What are its area and perimeter?",
        f"If a recipe needs {c} eggs for {a % 10 + 2} people, how many eggs are needed for {b % 20 + 2} people?"))


def first_round(rng: random.Random, n: int) -> list[str]:
    """Prompts that need no passage: writing, questions, roleplay, coding, math."""
    out = []
    for _ in range(n):
        t, u = rng.sample(TOPICS, 2)
        kind = rng.random()
        if kind < 0.35:
            out.append(rng.choice(WRITING).format(t=t))
        elif kind < 0.7:
            out.append(rng.choice(ASKING).format(t=t, u=u))
        elif kind < 0.85:
            out.append(rng.choice(CODING))
        else:
            out.append(math_prompt(rng))
    return out


def second_round(rng: random.Random, passages: list[tuple[str, str]], n: int) -> list[str]:
    """Prompts around passages the target wrote: summarization, RAG, extraction, translation."""
    out = []
    for _ in range(n):
        picked = [rng.choice(passages) for _ in range(rng.choice((1, 1, 2, 3)))]
        t, p = picked[0][0], "\n\n".join(text for _, text in picked)
        sentences = [s.strip() + "." for s in p.split(".") if len(s.strip()) > 20] or [p]
        s = " ".join(sentences[:rng.randint(1, 3)])
        out.append(rng.choice(CONTEXT).format(p=p, t=t, s=s, lang=rng.choice(LANGS)))
    return out


def third_round(model, tok, rng: random.Random, second: list[str], answers: list[tuple[list[int], int]], n: int,
                batch: int = 32) -> list[str]:
    """Requests the target writes to order (`ASK_FOR`, sampled), and, for a quarter of them, German, French ...
    to English translations of what it wrote when it answered the second round's translation prompts."""
    foreign = [(m.group(1), tok.decode(ids[k:], skip_special_tokens=True).strip())
               for p, (ids, k) in zip(second, answers) if (m := _TRANSLATED.match(p))]
    foreign = [(lang, text) for lang, text in foreign if len(text) > 20]
    n_back = n // 4 if foreign else 0
    asks = [rng.choice(ASK_FOR).format(t=rng.choice(TOPICS)) for _ in range(n - n_back)]
    written = [tok.decode(ids[k:], skip_special_tokens=True).strip() for ids, k in answer(model, tok, asks, 80, True, batch)]
    back = [f"Translate {lang} to English: {text}" for lang, text in (rng.choice(foreign) for _ in range(n_back))]
    out = [w for w in written if len(w) > 15] + back
    rng.shuffle(out)
    return out


def human_passages(min_words: int = 60, max_words: int = 320) -> list[str]:
    """Passages of human-written English from the documentation inside Python's own standard library:
    docstrings (read with `ast`, nothing imported) and `pydoc_data.topics`; consecutive prose paragraphs
    of one source joined to `min_words`..`max_words` words. Deterministic for a given Python."""
    sources: list[list[str]] = []
    root = sysconfig.get_paths()["stdlib"]
    skip = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo"}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for name in sorted(f for f in files if f.endswith(".py")):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            docs = [ast.get_docstring(n) for n in ast.walk(tree)
                    if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
            sources.append([p for d in docs if d for p in re.split(r"\n\s*\n", d)])
    try:
        from pydoc_data.topics import topics
        sources += [re.split(r"\n\s*\n", text) for _, text in sorted(topics.items())]
    except ImportError:  # a Python built without its documentation
        pass
    out = []
    for paragraphs in sources:
        cur: list[str] = []
        for p in paragraphs:
            words = p.split()
            prose = len(words) >= 25 and ">>>" not in p and sum(c.isalpha() or c.isspace() for c in p) > 0.85 * len(p)
            if prose:
                cur += words
            if cur and (not prose or len(cur) >= min_words):
                if len(cur) >= min_words:
                    out.append(" ".join(cur[:max_words]))
                cur = []
    return out


def passage_round(rng: random.Random, passages: list[str], n: int) -> list[str]:
    """Prompts around human-written passages (`human_passages`): summaries, questions on a term the passage
    uses, key points, quoting, rewriting, and questions over 2-3 numbered documents (RAG)."""
    out = []
    for _ in range(n):
        if rng.random() < 0.25:  # documents for a RAG question
            picked = rng.sample(passages, rng.choice((2, 3)))
        else:  # one passage of 1-4 neighbours (mostly of one source)
            i = rng.randrange(len(passages))
            picked = [" ".join(passages[i:i + rng.choice((1, 2, 3, 4))])]
        words = picked[0].split()
        terms = [w.strip(".,;:()\"'`*") for prev, w in zip(["."] + words, words) if prev[-1] not in ".:*"]
        terms = [w for w in terms if len(w) > 4 and (w[0].isupper() or "_" in w)] or [w for w in terms if len(w) > 6]
        docs = "\n\n".join(f"Document {i + 1}: {p}" for i, p in enumerate(picked))
        task = rng.choice(PASSAGE_TASKS) if len(picked) == 1 else PASSAGE_TASKS[-1]
        out.append(task.format(p=picked[0], t=rng.choice(terms) if terms else "this", docs=docs))
    return out


def word_runs(text: str, n: int = 6) -> set[tuple[str, ...]]:
    """The runs of n words in a row in a text, case and punctuation ignored."""
    w = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def sharing_runs(texts: list[str], reference: list[str], n: int = 6) -> list[int]:
    """Indices of the texts that share n words in a row with any reference text: how requests written for training
    are kept apart from an evaluation set (`scripts/data/*.jsonl` from Spec-Bench dev, whose prompts are for
    evaluation only)."""
    ref = set().union(*(word_runs(r, n) for r in reference))
    return [i for i, t in enumerate(texts) if word_runs(t, n) & ref]


def turns_of(path) -> list[str]:
    """Every user turn of a JSONL file of Spec-Bench's form ({"turns": [...]}) or of requests ({"prompt": ...})."""
    import json

    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [str(t) for r in rows for t in (r.get("turns") or [r.get("prompt", "")])]


def load_target(model_path: str | None = None):
    """(model, tokenizer) of the target whose answers make the data: a local Hugging Face directory or GGUF file
    (default: the embedded model), through transformers, in bfloat16 where the CPU computes it natively."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..backends.registry import default_model_path
    from ..backends.torch_hf import quiet_gguf_dtype_warning, resolve_dtype, resolve_model_source

    folder, extra = resolve_model_source(model_path or default_model_path())
    with quiet_gguf_dtype_warning():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype("auto"), local_files_only=True,
                                                     **extra).eval()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)


@torch.inference_mode()
def answer(model, tok, prompts: list[str], max_new_tokens: int, sample: bool, batch: int = 32,
           max_prompt: int = 768, progress=None) -> list[tuple[list[int], int]]:
    """The target's answers: [(prompt ids + answer ids up to its end-of-turn token, prompt length)]."""
    eos = end_ids(model, tok)
    encoded = [tok.encode(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                  tokenize=False), add_special_tokens=False)[-max_prompt:]
               for p in prompts]
    order = sorted(range(len(prompts)), key=lambda j: len(encoded[j]))  # batches of alike lengths pad little
    out: list = [None] * len(prompts)
    for i in range(0, len(order), batch):
        rows = order[i:i + batch]
        enc = [encoded[j] for j in rows]
        width = max(map(len, enc))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
        kw = {"do_sample": True, "temperature": 1.0, "top_k": 0} if sample else {"do_sample": False}
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id, eos_token_id=eos, **kw)[:, width:]
        for j, e, g in zip(rows, enc, gen.tolist()):
            out[j] = (e + _cut(g, eos, keep=True), len(e))
        if progress is not None:
            progress.update(len(enc))
    return out


@torch.inference_mode()
def features(model, seqs: list[tuple[list[int], int]], dtype=torch.bfloat16, taps: tuple[int, ...] = (),
             progress: bool = False) -> list[torch.Tensor]:
    """The target's final (normed) hidden state at every position of every sequence: [T, H] each; with
    `taps`, followed by the RMS-normalised residual streams after those layers: [T, H (1 + len(taps))],
    the rows `TorchBackend.record_features(taps=...)` keeps. `progress`: a bar (~1,000 tokens a second on
    2 cores)."""
    from tqdm import tqdm

    from ..backends.torch_llama import hidden_features

    eps = float(getattr(model.config.get_text_config(), "rms_norm_eps", 1e-6))
    return [hidden_features(model.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states,
                            taps, eps).to(dtype)
            for ids, _ in tqdm(seqs, desc="target features", unit="conversation", disable=not progress)]


def end_ids(model, tok) -> list[int]:
    """The ids that end a turn: the generation config's EOS list, else the tokenizer's EOS."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = ids if ids is not None else tok.eos_token_id
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]) if i is not None]


def _cut(ids: list[int], ends: list[int], keep: bool) -> list[int]:
    """ids up to the first end id (included when `keep`), or all of them."""
    cut = next((i for i, t in enumerate(ids) if t in ends), None)
    return ids if cut is None else ids[:cut + 1 if keep else cut]


@torch.inference_mode()
def self_instruct(model, tok, n: int, batch: int = 32, max_new_tokens: int = 48) -> list[str]:
    """Requests the target writes itself (Self-Instruct, Wang et al. 2022): a user turn sampled from the
    chat template's opening, for prompts no template list foresees."""
    marker = "\u2063"
    opening = tok.apply_chat_template([{"role": "user", "content": marker}], add_generation_prompt=False,
                                      tokenize=False).split(marker)[0]
    ids = torch.tensor([tok.encode(opening, add_special_tokens=False)] * batch)
    eos = end_ids(model, tok)
    out: list[str] = []
    for _ in range(4 * (n // batch + 1)):  # a model that ends its turns at once must not loop forever
        if len(out) >= n:
            break
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=True, temperature=0.9, top_k=0, pad_token_id=tok.pad_token_id,
                             eos_token_id=eos)[:, ids.shape[1]:]
        for g in gen.tolist():
            text = tok.decode(_cut(g, eos, keep=False), skip_special_tokens=True).strip()
            if len(text) > 15:
                out.append(text)
    return out[:n]


def build(model, tok, n_first: int = 320, n_second: int = 320, max_new_tokens: int = 160, sample_share: float = 0.35,
          seed: int = 0, batch: int = 32, progress=None, n_third: int = 0,
          n_passage: int = 0) -> list[tuple[list[int], int]]:
    """The rounds: (ids, prompt length) per conversation. n_first = 0 skips the first three rounds."""
    rng = random.Random(seed)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token

    def stage(text: str) -> None:  # the bar counts answers; writing requests shows as its description
        if progress is not None and hasattr(progress, "set_description"):
            progress.set_description(text)

    def answered(prompts: list[str]) -> list[tuple[list[int], int]]:  # a share sampled, the rest greedy
        stage("target answers")
        n_s = int(len(prompts) * sample_share)
        return (answer(model, tok, prompts[:n_s], max_new_tokens, True, batch, progress=progress)
                + answer(model, tok, prompts[n_s:], max_new_tokens, False, batch, progress=progress))

    convs: list[tuple[list[int], int]] = []
    if n_passage:
        convs += answered(passage_round(rng, human_passages(), n_passage))
    if not n_first:
        return convs
    stage("target writes requests")
    prompts = first_round(rng, n_first - n_first // 3) + self_instruct(model, tok, n_first // 3)
    first = answered(prompts)
    passages = [(p, tok.decode(ids[n:], skip_special_tokens=True)) for p, (ids, n) in zip(prompts, first)
                if len(ids) - n > min(60, max_new_tokens // 2) and "function" not in p]
    if not passages:
        raise ValueError("the target wrote no answer long enough to serve as a passage")
    topics = [(next((t for t in TOPICS if t in p), "the topic"), text) for p, text in passages]
    second = second_round(rng, topics, n_second)
    second_convs = answered(second)
    convs += first + second_convs
    if n_third:
        stage("target writes requests")
        convs += answered(third_round(model, tok, rng, second, second_convs, n_third, batch))
    return convs
