"""Training a `DraftHead` on the target's features (EAGLE-1, arXiv 2401.15077, §3.2, with an unrolled test).

Loss at position i (an answer position, the head's prediction f̂_i against the target's f_i):

    L = w_reg * SmoothL1(f̂_i, f_i) + w_cls * CE(softmax(W f_i), softmax(W f̂_i))     (EAGLE eq. 3-5)

with W the draft-vocabulary rows of the target's LM head, so the classification term asks for
the target's next-token law, not the sampled text. EAGLE trains with real features only and
notes the error its chains accumulate; like EAGLE-3's "training-time test", the head here is
also run at depth d = 2, 3, ...: the input feature at i is the head's own depth d-1 prediction
for i - 1, and the query attends to the real rows up to i - d + 1 plus the chain rows before it,
exactly what it sees while drafting token d of a chain (`HeadCache`).
"""
from __future__ import annotations

import math
import os
import random
import time
import zlib
from collections import Counter

import torch
import torch.nn.functional as F

from ..checks import int_at_least
from .head_model import DraftHead


def draft_vocab(convs: list[tuple[list[int], int]], size: int, always: tuple[int, ...] = ()) -> torch.Tensor:
    """The `size` token ids seen most in the answers (plus `always`), ascending: LongTensor [Vd]."""
    counts = Counter(t for ids, n in convs for t in ids[n:])
    keep = list(dict.fromkeys([*always, *(t for t, _ in counts.most_common(size))]))[:size]
    return torch.tensor(sorted(keep), dtype=torch.long)


def _shift(x: torch.Tensor, s: int, dim: int) -> torch.Tensor:
    """x moved s steps forward along `dim` (x'[i] = x[i - s]), zeros in front."""
    if s == 0:
        return x
    pad = torch.zeros_like(x.narrow(dim, 0, s))
    return torch.cat((pad, x.narrow(dim, 0, x.shape[dim] - s)), dim)


def unrolled(head: DraftHead, tokens: torch.Tensor, feats: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """The head's predictions at depths 1..depth for every position: f̂_d [B, T, H] each.

    tokens [B, T] (x_i), feats [B, T, H] (the target's f_i; depth 1 reads f_{i-1}).
    """
    T = feats.shape[1]
    pos = torch.arange(T)
    scale = head.d ** -0.5
    x = head.inputs(tokens, _shift(feats, 1, 1))
    q, k1, v1 = head.project(x, pos)
    outs = [head.finish(x, F.scaled_dot_product_attention(q, k1, v1, is_causal=True))]
    ks, vs = [], []
    rows = torch.arange(T)
    for d in range(2, depth + 1):
        x = head.inputs(tokens, _shift(outs[-1], 1, 1))
        q, k, v = head.project(x, pos)
        ks.append(k)
        vs.append(v)
        real = rows[None, :] <= rows[:, None] - (d - 1)  # [T, T] real rows j <= i - d + 1
        s_real = (q @ k1.transpose(-1, -2) * scale).masked_fill(~real, float("-inf"))  # [B, nh, T, T]
        chain_k = [_shift(kk, d - dd, 2) for dd, kk in enumerate(ks, start=2)]  # row i - (d - dd) of depth dd
        chain_v = [_shift(vv, d - dd, 2) for dd, vv in enumerate(vs, start=2)]
        s_chain = torch.stack([(q * kk).sum(-1) * scale for kk in chain_k], -1)  # [B, nh, T, d - 1]
        s_chain[..., :-1] = s_chain[..., :-1].masked_fill(rows[:, None] < torch.arange(d - 2, 0, -1)[None], float("-inf"))
        p = torch.softmax(torch.cat((s_real, s_chain), -1).float(), -1).to(q.dtype)
        o = p[..., :T] @ v1 + sum(p[..., T + j, None] * vv for j, vv in enumerate(chain_v))
        outs.append(head.finish(x, o))
    return outs


def loss_terms(head: DraftHead, outs: list[torch.Tensor], feats: torch.Tensor, mask: torch.Tensor,
               w_cls: float = 1.0, decay: float = 0.8, w_reg: float = 1.0):
    """(total loss, per-depth top-1 agreement with the target's draft-vocab argmax). mask [B, T] bool;
    feats [B, T, H (1 + taps)]: the final features f come first."""
    feats = feats[..., :head.fc.out_features]
    with torch.no_grad():
        p_target = torch.softmax(head.logits(feats[mask]).float(), -1)  # [N, Vd]
        top = p_target.argmax(-1)
    total, agree = 0.0, []
    for d, f_hat in enumerate(outs):
        valid = mask.clone()
        valid[:, :d] = False  # positions with a full chain of d predictions
        sel = valid[mask]  # [N]
        fh = f_hat[valid]
        reg = F.smooth_l1_loss(fh.float(), feats[valid].float())
        logq = torch.log_softmax(head.logits(fh).float(), -1)
        cls = -(p_target[sel] * logq).sum(-1).mean()
        total = total + decay ** d * (w_reg * reg + w_cls * cls)
        agree.append(float((logq.argmax(-1) == top[sel]).float().mean()))
    return total, agree


def batches(convs, feats, max_tokens: int, rng: random.Random, max_len: int = 1024):
    """Padded batches of alike lengths: (tokens [B, T], feats [B, T, H], loss mask [B, T]).

    The loss covers every position (the target's law is defined on the prompt as well: more data, and the
    passages of summarization / RAG prompts are the target's own writing)."""
    order = sorted(range(len(convs)), key=lambda i: len(convs[i][0]))
    groups, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * min(len(convs[i][0]), max_len) > max_tokens:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    rng.shuffle(groups)
    for g in groups:
        T = min(max(len(convs[i][0]) for i in g), max_len)
        tok = torch.zeros(len(g), T, dtype=torch.long)
        fe = torch.zeros(len(g), T, feats[g[0]].shape[-1])
        mask = torch.zeros(len(g), T, dtype=torch.bool)
        for r, i in enumerate(g):
            ids = convs[i][0]
            L = min(len(ids), T)
            tok[r, :L] = torch.tensor(ids[:L])
            fe[r, :L] = feats[i][:L].float()
            mask[r, 1:L - 1] = True  # f_i predicts x_{i+1}
        yield tok, fe, mask


def train(head: DraftHead, convs, feats, epochs: int = 4, lr: float = 1e-3, depth: int = 3,
          max_tokens: int = 1024, seed: int = 0, noise: float = 0.05, log=print, w_reg: float = 1.0,
          progress: bool = False) -> list[dict]:
    """AdamW with cosine decay; input features get uniform noise (EAGLE's data augmentation). w_reg = 0 drops
    the feature regression and trains tokens alone, as EAGLE-3 does (arXiv 2503.01840). `progress`: a bar per
    epoch."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    per_epoch = sum(1 for _ in batches(convs, feats, max_tokens, random.Random(0)))
    steps = epochs * per_epoch
    warm = max(1, steps // 20)  # linear warm-up, then cosine decay to zero
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history, t0 = [], time.time()
    for epoch in range(epochs):
        tot, agree, n = 0.0, None, 0
        for tok, fe, mask in tqdm(batches(convs, feats, max_tokens, rng), total=per_epoch, unit="batch",
                                  desc=f"epoch {epoch + 1}/{epochs}", disable=not progress):
            noisy = fe + (torch.rand_like(fe) - 0.5) * 2 * noise * fe.abs().mean()
            outs = unrolled(head, tok, noisy, depth)
            loss, acc = loss_terms(head, outs, fe, mask, w_reg=w_reg)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
            sched.step()
            tot += float(loss.detach())
            agree = acc if agree is None else [a + b for a, b in zip(agree, acc)]
            n += 1
        history.append({"epoch": epoch + 1, "loss": tot / n, "agree": [a / n for a in agree], "s": time.time() - t0})
        log(f"epoch {epoch + 1}: loss {tot / n:.3f}, top-1 agreement by depth "
            f"{', '.join(f'{a / n:.3f}' for a in agree)} ({time.time() - t0:.0f} s)")
    return history


@torch.no_grad()
def evaluate(head: DraftHead, convs, feats, depth: int = 3) -> list[float]:
    """Top-1 agreement with the target's (draft-vocab) argmax by depth on held-out conversations."""
    agree, n = [0.0] * depth, 0
    for tok, fe, mask in batches(convs, feats, 8192, random.Random(0)):
        _, acc = loss_terms(head, unrolled(head, tok, fe, depth), fe, mask)
        agree = [a + b for a, b in zip(agree, acc)]
        n += 1
    return [a / n for a in agree]


def fit_head(model, convs, vocab_size: int = 8192, intermediate: int = 1024, epochs: int = 6, depth: int = 3,
             lr: float = 2e-3, max_tokens: int = 1024, seed: int = 0, log=print, init: DraftHead | None = None,
             taps: tuple[int, ...] = (), w_reg: float = 1.0, progress: bool = False) -> DraftHead:
    """A head for the Hugging Face causal LM `model`, trained on `convs` [(ids, prompt length)]: the
    target's features are computed here, the draft vocabulary is the answers' `vocab_size` commonest tokens.
    `init`: train this head further instead (its vocabulary and sizes kept; `taps` added if it has none).
    `taps`: target layers the head also reads (`DraftHead`). `progress`: bars for the features and each epoch."""
    from .head_data import features
    from .head_model import rope_theta_of, with_taps

    cfg = model.config.get_text_config()
    torch.manual_seed(seed)
    head = with_taps(init, taps).train() if init is not None else DraftHead(
        cfg.hidden_size, cfg.num_attention_heads, intermediate,
        draft_vocab(convs, min(vocab_size, cfg.vocab_size), always_ids(cfg)), rope_theta_of(cfg), taps=taps)
    feats = features(model, convs, taps=head.taps, progress=progress)
    head.attach(model.get_input_embeddings().weight.float(), model.get_output_embeddings().weight.float())
    train(head, convs, feats, epochs=epochs, lr=lr, depth=depth, max_tokens=max_tokens, seed=seed, log=log,
          w_reg=w_reg, progress=progress)
    return head.eval()


def held_out_split(convs: list[tuple[list[int], int]], every: int = 32) -> tuple[list, list]:
    """(held-out, training) conversations: about one in `every`, chosen by a hash of its tokens, so that the split
    is the same whatever the seed or order, and a head trained further (`--init`) is never scored on conversations
    it was trained on. At least one is held out."""
    pick = [zlib.crc32(torch.tensor(ids, dtype=torch.int64).numpy().tobytes()) % every == 0 for ids, _ in convs]
    if convs and not any(pick):
        pick[0] = True
    return [c for c, p in zip(convs, pick) if p], [c for c, p in zip(convs, pick) if not p]


def always_ids(cfg) -> tuple[int, ...]:
    """The end-of-sequence ids a draft vocabulary always holds."""
    eos = getattr(cfg, "eos_token_id", None)
    return tuple(eos if isinstance(eos, list) else [eos]) if eos is not None else ()


def run(model_path: str | None = None, out: str | None = None, prompts: int = 1280, max_new_tokens: int = 160,
        epochs: int = 5, vocab_size: int = 8192, intermediate: int = 1024, depth: int = 2, lr: float = 1e-3,
        seed: int = 0, data: list[str] | None = None, save_data: str | None = None, log=print,
        init: str | None = None, passages: int = 0, taps: tuple[int, ...] = (), feature_loss: float = 1.0) -> dict:
    """`verispec train-head`: the target answers `prompts` synthetic prompts and `passages` prompts around
    human-written passages (`head_data`; saved to `save_data` if given), joined by earlier rounds' conversation
    files `data`; a head fitted to them (or `init`, a head file, trained further) is saved with a probe of its
    target. Returns a summary (also kept in the file's metadata)."""
    from tqdm import tqdm

    from ..backends.registry import default_model_path
    from .head import check_target, shipped_head_path, target_probe
    from .head_data import build, features, load_target
    from ..backends.torch_llama import check_taps
    from .head_model import load_head, save_head, with_taps

    for flag, n in (("--prompts", prompts), ("--passages", passages)):  # before the model loads
        if not int_at_least(n, 0):
            raise ValueError(f"{flag} must be an int >= 0, got {n!r}")
    if not feature_loss >= 0:
        raise ValueError(f"--feature-loss must be >= 0, got {feature_loss!r}")
    path = model_path or default_model_path()
    model, tok = load_target(path)
    taps = check_taps(taps, model.config.get_text_config().num_hidden_layers, "--taps")
    start = None
    if init:  # before the long part: a head for another target, or with other taps, is refused now
        start, meta = load_head(init)
        check_target(meta, model.get_output_embeddings().weight)
        start = with_taps(start, taps)
    t0 = time.time()
    convs = []
    for f in data or ():
        convs += [(list(ids), int(n)) for ids, n in torch.load(f, weights_only=True)]
    if prompts > 0 or passages > 0:
        with tqdm(total=prompts + passages, desc="target answers", unit="prompt") as bar:
            third = prompts // 4
            first = (prompts - third) // 2
            new = build(model, tok, first, prompts - third - first, max_new_tokens, seed=seed, progress=bar,
                        n_third=third, n_passage=passages)
        if save_data:
            torch.save(new, save_data)
        convs += new
    if not convs:
        raise ValueError("no training data: give --prompts or --passages > 0, or --data files")
    held, train_set = held_out_split(convs)
    log(f"{len(convs)} conversations, {sum(map(len, (c[0] for c in convs)))} tokens ({time.time() - t0:.0f} s)")
    head = fit_head(model, train_set, vocab_size, intermediate, epochs, depth, lr, max_tokens=2048, seed=seed, log=log,
                    init=start, taps=taps, w_reg=feature_loss, progress=True)
    agree = evaluate(head, held, features(model, held, taps=head.taps), depth=max(depth, 3))
    log(f"held-out top-1 agreement with the target by depth: {', '.join(f'{a:.3f}' for a in agree)}")
    summary = {"conversations": len(convs), "tokens": sum(len(c[0]) for c in convs), "epochs": epochs,
               "depth": depth, "lr": lr, "taps": list(head.taps), "feature_loss": feature_loss,
               "held_out_agreement": agree, "seconds": round(time.time() - t0)}
    if start is not None:
        summary["continued_from"] = {"file": os.path.basename(init), "training": meta.get("training")}
    out = out or shipped_head_path()
    save_head(head, out, meta={**target_probe(model, path), "training": summary})
    log(f"saved {out}")
    return summary
