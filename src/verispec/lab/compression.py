"""``verispec lab compression``: distributed lossy compression with side information via GLS (Gaussian source).

Rowan, Phan, Khisti, arXiv 2506.05632, Section 5 (ALGORITHMS.md section 6, "Lossy compression with side
information"). One encoder sees the source A = a; K decoders each see their own side information T_k; all share
randomness: a codebook U_1..U_N ~ p_W (importance samples of the test channel's output), labels l_i uniform in
{0..L_max-1}, and exponentials S[k, i] (one row per decoder).

* encoder:   Y = argmin_i min_k S[k, i] / r_enc(U_i),  r_enc(w) = p_{W|A}(w | a) / p_W(w);  sends M = l_Y
  (rate exactly log2 L_max bits; L_max must be a power of two);
* decoder k: X_k = argmin_{i : l_i = M} S[k, i] / r_dec(U_i | t_k),  r_dec(w | t) = p_{W|T}(w | t) / p_W(w);
  it outputs W_k = U_{X_k} and the estimate g(W_k, t_k); the best decoder is kept (oracle choice, as in the paper).
* baseline ("shared row"): every decoder uses row S[0, :] (the encoder then has a list of one).

Gaussian experiment: A ~ N(0, 1), T_k = A + N(0, sigma2), W = A + N(0, sigma_W2); g = MMSE estimate of A from
(T_k, W_k). For each (K, rate) the test-channel variance sigma_W2 is tuned on one batch and evaluated on another.
Reference: the Wyner-Ziv function of one decoder, D(R) = sigma2 / (1 + sigma2) * 2^(-2R) (asymptotic, many uses).
"""

from __future__ import annotations

import math

import numpy as np

from .report import new_figure, out_dir, progress, save_figure, write_table

MAX_RATE = 8  # labels are 8-bit; rate R uses their top R bits, so codes are nested across rates


def rate_bits(L_max: int) -> int:
    """Rate of one message in bits: ``log2 L_max``; ``ValueError`` unless L_max is a power of two >= 1."""
    if not isinstance(L_max, (int, np.integer)) or L_max < 1 or L_max & (L_max - 1):
        raise ValueError(f"L_max must be a power of two >= 1, got {L_max!r}")
    return int(L_max).bit_length() - 1


def encode_message(M: int, L_max: int) -> str:
    """The message M in {0..L_max-1} as exactly ``rate_bits(L_max)`` binary digits ('' for L_max = 1)."""
    R = rate_bits(L_max)
    if not 0 <= M < L_max:
        raise ValueError(f"message {M} outside [0, {L_max})")
    return format(int(M), f"0{R}b") if R else ""


def decode_message(bits: str, L_max: int) -> int:
    """Inverse of :func:`encode_message`; ``ValueError`` if the length is not the rate."""
    if len(bits) != rate_bits(L_max) or set(bits) - {"0", "1"}:
        raise ValueError(f"expected {rate_bits(L_max)} binary digits, got {bits!r}")
    return int(bits, 2) if bits else 0


def labels_at_rate(labels8: np.ndarray, R: int) -> np.ndarray:
    """Labels in {0..2^R - 1}: the top R bits of shared 8-bit labels (nested codes across rates)."""
    if not 0 <= R <= MAX_RATE:
        raise ValueError(f"rate must be in [0, {MAX_RATE}] bits, got {R}")
    return labels8 >> (MAX_RATE - R)


def gls_encode(log_r_enc: np.ndarray, log_S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encoder of arXiv 2506.05632 Section 5: ``Y = argmin_i min_k S[k,i] / r_enc(U_i)``.

    log_r_enc: [B, N] log density ratio per codebook entry; log_S: [B, K, N] log of the shared exponentials.
    Returns (Y [B] codebook index, k_star [B] the row that attained the minimum).
    """
    score = log_S - log_r_enc[:, None, :]  # [B, K, N]
    flat = score.reshape(score.shape[0], -1).argmin(-1)
    return flat % score.shape[-1], flat // score.shape[-1]


def gls_decode(log_r_dec: np.ndarray, log_S: np.ndarray, labels: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Decoders of Section 5: ``X_k = argmin_{i: l_i = M} S[k,i] / r_dec(U_i | t_k)``.

    log_r_dec: [B, K, N] (decoder k's own side information); log_S: [B, K, N]; labels: [B, N]; M: [B].
    Returns X: [B, K]. A decoder whose label class is empty would return index 0; it never happens because
    the encoder's own choice Y carries the label M.
    """
    score = np.where((labels == M[:, None])[:, None, :], log_S - log_r_dec, np.inf)
    return score.argmin(-1)


def log_normal(x: np.ndarray, mean: np.ndarray, var: float | np.ndarray) -> np.ndarray:
    """Log density of N(mean, var) (scalar), broadcast."""
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def gaussian_batch(rng: np.random.Generator, B: int, K: int, N: int, sigma2: float, sigma_w2: float,
                   shared_row: bool = False, decoder_rng: np.random.Generator | None = None) -> dict:
    """One batch of the Gaussian experiment at all rates 0..MAX_RATE.

    ``decoder_rng`` (a broken variant for tests): decoders draw their exponentials from their own generator
    instead of sharing the encoder's. Returns a dict of arrays: ``a`` [B], ``t`` [B, K], ``Y`` [B],
    ``X`` [R+1, B, K] decoder indices per rate, ``ahat`` [R+1, B, K] estimates, ``labels8`` [B, N], ``M`` [R+1, B].
    """
    if B < 1 or K < 1 or N < 1 or sigma2 < 0 or sigma_w2 <= 0:
        raise ValueError("need B, K, N >= 1, sigma2 >= 0, sigma_w2 > 0")
    a = rng.standard_normal(B)
    t = a[:, None] + math.sqrt(sigma2) * rng.standard_normal((B, K))  # [B, K] side information
    U = math.sqrt(1 + sigma_w2) * rng.standard_normal((B, N))  # codebook ~ p_W = N(0, 1 + sigma_W2)
    labels8 = rng.integers(0, 2 ** MAX_RATE, size=(B, N))
    log_S = np.log(rng.exponential(size=(B, 1 if shared_row else K, N)))
    log_S = np.broadcast_to(log_S, (B, K, N))
    log_pw = log_normal(U, 0.0, 1 + sigma_w2)
    Y, _ = gls_encode(log_normal(U, a[:, None], sigma_w2) - log_pw, log_S)
    if sigma2 > 0:  # A | T = t ~ N(t / (1 + sigma2), sigma2 / (1 + sigma2)); W | T adds sigma_W2
        mu, var = t / (1 + sigma2), sigma2 / (1 + sigma2) + sigma_w2
    else:  # perfect side information: T = A, so p_{W|T} = p_{W|A}
        mu, var = t, sigma_w2
    log_r_dec = log_normal(U[:, None, :], mu[:, :, None], var) - log_pw[:, None, :]  # [B, K, N]
    log_S_dec = log_S if decoder_rng is None else np.log(decoder_rng.exponential(size=(B, K, N)))
    X, ahat, Ms = [], [], []
    for R in range(MAX_RATE + 1):
        lab = labels_at_rate(labels8, R)
        M = lab[np.arange(B), Y]
        Xr = gls_decode(log_r_dec, log_S_dec, lab, M)  # [B, K]
        W = np.take_along_axis(U, Xr, 1)  # [B, K]
        prec_t = 1 / sigma2 if sigma2 > 0 else 1e12
        ahat.append((t * prec_t + W / sigma_w2) / (1 + prec_t + 1 / sigma_w2))  # MMSE of A from (T_k, W_k)
        X.append(Xr), Ms.append(M)
    return {"a": a, "t": t, "Y": Y, "X": np.stack(X), "ahat": np.stack(ahat), "labels8": labels8, "M": np.stack(Ms)}


def distortion(batch: dict) -> np.ndarray:
    """Best-decoder MSE per rate: mean over trials of ``min_k (ahat_k - a)^2``. Returns [MAX_RATE + 1]."""
    return ((batch["ahat"] - batch["a"][None, :, None]) ** 2).min(-1).mean(-1)


def _chunks(rng, B: int, chunk: int, **kw) -> np.ndarray:
    """Distortion per rate averaged over ``B`` trials, computed in chunks (memory B x K x N)."""
    tot, done = np.zeros(MAX_RATE + 1), 0
    while done < B:
        b = min(chunk, B - done)
        tot += distortion(gaussian_batch(rng, b, **kw)) * b
        done += b
    return tot / B


def run(out: str = "lab_out", seed: int = 0, quick: bool = False, show_progress: bool = True,
        sigma2: float = 0.5, Ks: tuple[int, ...] = (1, 2, 4)) -> dict:
    """Write ``compression_gauss.{csv,md,png}``: best distortion against rate for K in Ks, GLS and shared row."""
    out = out_dir(out)
    N, B = (1024, 300) if quick else (4096, 2000)
    grid = (0.02, 0.1, 0.3, 1.0) if quick else (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
    rows = []
    jobs = [(K, shared) for K in Ks for shared in ((False, True) if K > 1 else (False,))]
    for K, shared in progress(jobs, "gaussian compression", enabled=show_progress):
        kw = {"K": K, "N": N, "sigma2": sigma2, "shared_row": shared}
        tune = np.stack([_chunks(np.random.default_rng([seed, 1, K, shared, i]), B // 2, 250, sigma_w2=s, **kw)
                         for i, s in enumerate(grid)])  # [grid, R]
        best = tune.argmin(0)  # per rate
        evals = {g: _chunks(np.random.default_rng([seed, 2, K, shared, g]), B, 250, sigma_w2=grid[g], **kw)
                 for g in set(best.tolist())}
        for R in range(MAX_RATE + 1):
            rows.append({"scheme": "shared row" if shared else "GLS", "K": K, "rate_bits": R,
                         "L_max": 2 ** R, "sigma_W2": grid[best[R]], "mse": float(evals[best[R]][R]),
                         "wyner_ziv_K1": sigma2 / (1 + sigma2) * 2.0 ** (-2 * R)})
    write_table(rows, out, "compression_gauss", f"Gaussian source, sigma2 = {sigma2}: best-decoder MSE against rate")
    fig, axes = new_figure(1, width=6)
    ax = axes[0]
    colors = {1: "k", 2: "tab:blue", 4: "tab:red", 8: "tab:green"}
    for K, shared in jobs:
        r = [x for x in rows if x["K"] == K and (x["scheme"] == "shared row") == shared]
        ax.semilogy([x["rate_bits"] for x in r], [x["mse"] for x in r], color=colors.get(K, None),
                    ls="--" if shared else "-", marker="o" if not shared else "x",
                    label=f"K={K} " + ("shared row" if shared else "GLS"))
    Rs = np.arange(MAX_RATE + 1)
    ax.semilogy(Rs, sigma2 / (1 + sigma2) * 2.0 ** (-2 * Rs), "k:", label="Wyner-Ziv D(R), K=1 (asymptotic)")
    ax.set(xlabel="rate (bits)", ylabel="MSE (best decoder)", title=f"Gaussian source, side info noise {sigma2}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    png = save_figure(fig, out, "compression_gauss")
    return {"png": str(png), "rows": rows}
