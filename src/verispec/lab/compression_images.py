"""``verispec lab compression`` on images: scikit-learn's 8x8 digits (bundled, no download).

Rowan, Phan, Khisti, arXiv 2506.05632, Section 5 (their MNIST study: source = right half, side information = a random
7x7 crop of the left half, beta-VAE latents). Here, at 8x8:

* source A = the right half (8x4 = 32 pixels, scaled to [0, 1]);
* decoder k's side information T_k = a random 3x3 crop of the left half (12 positions) and its position;
* latent Z = whitened PCA of A (d = 8, fitted on training images); test channel W = Z + N(0, sigma_W2 I);
* p_{W|T}: per crop position, a linear-Gaussian fit Z | t ~ N(B t + c, Sigma), so W | t ~ N(B t + c, Sigma + sigma_W2 I);
* reconstruction g(W_k, T_k): per crop position, least squares of A on (W, t), fitted with simulated W.

The GLS encoder / decoders are those of :mod:`.compression` (shared codebook U_i ~ N(0, (1 + sigma_W2) I),
8-bit labels, exponentials S[k, i]); the best decoder's per-pixel MSE is kept.
"""

from __future__ import annotations

import numpy as np

from .compression import MAX_RATE, gls_decode, gls_encode, labels_at_rate
from .report import new_figure, out_dir, progress, save_figure, write_table

CROP = 3
POSITIONS = [(r, c) for r in range(8 - CROP + 1) for c in range(4 - CROP + 1)]  # 12 crops of the 8x4 left half


def load_digits_split(seed: int) -> dict[str, np.ndarray]:
    """Digits as [n, 8, 8] in [0, 1], split into fit / tune / test (numpy Generator from seed)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FileNotFoundError("scikit-learn is needed for the digits source: pip install scikit-learn") from e
    img = load_digits().images / 16.0  # [1797, 8, 8]
    idx = np.random.default_rng([seed, 7]).permutation(len(img))
    return {"fit": img[idx[:1200]], "tune": img[idx[1200:1400]], "test": img[idx[1400:]]}


def crop(img: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """3x3 crops of the left halves. img: [B, 8, 8]; pos: [B, K] indices into POSITIONS. Returns [B, K, 9]."""
    rc = np.array(POSITIONS)[pos]  # [B, K, 2]
    r = rc[..., 0, None, None] + np.arange(CROP)[:, None]  # [B, K, 3, 1]
    c = rc[..., 1, None, None] + np.arange(CROP)[None, :]  # [B, K, 1, 3]
    return img[np.arange(img.shape[0])[:, None, None, None], r, c].reshape(*pos.shape, CROP * CROP)


class DigitModel:
    """PCA latent, linear-Gaussian p(Z | crop) and the reconstruction maps, all fitted on the "fit" images."""

    def __init__(self, fit: np.ndarray, d: int = 8, seed: int = 0):
        A = fit[:, :, 4:].reshape(len(fit), -1)  # [n, 32]
        self.mean = A.mean(0)
        _, s, Vt = np.linalg.svd(A - self.mean, full_matrices=False)
        self.V, self.scale = Vt[:d].T, s[:d] / np.sqrt(len(A))  # [32, d], [d]
        Z = self.encode_latent(fit)
        n, P = len(fit), len(POSITIONS)
        self.B, self.cov = [], []
        for j in range(P):  # Z | t at crop position j: least squares + residual covariance
            X = np.c_[crop(fit, np.full((n, 1), j))[:, 0], np.ones(n)]  # [n, 10]
            Bj = np.linalg.lstsq(X, Z, rcond=None)[0]
            self.B.append(Bj), self.cov.append(np.cov((Z - X @ Bj).T) + 1e-6 * np.eye(d))
        self.B, self.cov = np.stack(self.B), np.stack(self.cov)  # [P, 10, d], [P, d, d]
        self.fit_imgs, self.d, self.rng = fit, d, np.random.default_rng([seed, 11])
        self._g: dict[float, np.ndarray] = {}

    def encode_latent(self, img: np.ndarray) -> np.ndarray:
        """Whitened PCA latent of the right halves. img: [B, 8, 8]. Returns [B, d]."""
        return (img[:, :, 4:].reshape(len(img), -1) - self.mean) @ self.V / self.scale

    def recon_map(self, sigma_w2: float) -> np.ndarray:
        """Per-position least squares A ~ [W, t, 1] with W = Z + noise. Returns G [P, d + 10, 32]."""
        if sigma_w2 not in self._g:
            f = self.fit_imgs
            n = len(f)
            A = f[:, :, 4:].reshape(n, -1)
            W = self.encode_latent(f) + np.sqrt(sigma_w2) * self.rng.standard_normal((n, self.d))
            self._g[sigma_w2] = np.stack([np.linalg.lstsq(np.c_[W, crop(f, np.full((n, 1), j))[:, 0], np.ones(n)],
                                                          A, rcond=None)[0] for j in range(len(POSITIONS))])
        return self._g[sigma_w2]


def _log_ratio_dec(U: np.ndarray, mu: np.ndarray, cov: np.ndarray, sigma_w2: float) -> np.ndarray:
    """log p_{W|T}(U | t_k) - log p_W(U). U: [B, N, d]; mu: [B, K, d]; cov: [B, K, d, d]. Returns [B, K, N]."""
    d = U.shape[-1]
    C = cov + sigma_w2 * np.eye(d)
    L = np.linalg.cholesky(C)  # [B, K, d, d]
    diff = U[:, None] - mu[:, :, None]  # [B, K, N, d]
    sol = np.linalg.solve(L[:, :, None], diff[..., None])[..., 0]  # L^-1 diff
    logdet = 2 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1)  # [B, K]
    log_pw = -0.5 * (U ** 2).sum(-1) / (1 + sigma_w2) - 0.5 * d * np.log(1 + sigma_w2)  # [B, N]
    return -0.5 * (sol ** 2).sum(-1) - 0.5 * logdet[..., None] - log_pw[:, None]


def digits_batch(model: DigitModel, img: np.ndarray, rng: np.random.Generator, K: int, N: int, sigma_w2: float,
                 shared_row: bool = False) -> dict[str, np.ndarray]:
    """Encode/decode a batch of images at all rates. img: [B, 8, 8]. Returns ``recon`` [R+1, B, K, 32], ``mse``
    [R+1, B, K] per-pixel MSE, ``pos`` [B, K] crop positions, ``Y`` [B], ``X`` [R+1, B, K]."""
    Bn, d = len(img), model.d
    pos = rng.integers(0, len(POSITIONS), size=(Bn, K))
    t = crop(img, pos)  # [B, K, 9]
    z = model.encode_latent(img)  # [B, d]
    U = np.sqrt(1 + sigma_w2) * rng.standard_normal((Bn, N, d))  # shared codebook
    labels8 = rng.integers(0, 2 ** MAX_RATE, size=(Bn, N))
    log_S = np.broadcast_to(np.log(rng.exponential(size=(Bn, 1 if shared_row else K, N))), (Bn, K, N))
    log_r_enc = (-0.5 * ((U - z[:, None]) ** 2).sum(-1) / sigma_w2 - 0.5 * d * np.log(sigma_w2)
                 + 0.5 * (U ** 2).sum(-1) / (1 + sigma_w2) + 0.5 * d * np.log(1 + sigma_w2))
    Y, _ = gls_encode(log_r_enc, log_S)
    tx = np.concatenate([t, np.ones((Bn, K, 1))], -1)  # [B, K, 10]
    mu = np.einsum("bki,bkid->bkd", tx, model.B[pos])
    log_r_dec = _log_ratio_dec(U, mu, model.cov[pos], sigma_w2)
    G = model.recon_map(sigma_w2)[pos]  # [B, K, d + 10, 32]
    A = img[:, :, 4:].reshape(Bn, -1)
    X, recon = [], []
    for R in range(MAX_RATE + 1):
        lab = labels_at_rate(labels8, R)
        Xr = gls_decode(log_r_dec, log_S, lab, lab[np.arange(Bn), Y])
        W = U[np.arange(Bn)[:, None], Xr]  # [B, K, d]
        recon.append(np.clip(np.einsum("bki,bkio->bko", np.concatenate([W, tx], -1), G), 0, 1))
        X.append(Xr)
    recon = np.stack(recon)
    return {"recon": recon, "mse": ((recon - A[None, :, None]) ** 2).mean(-1), "pos": pos, "Y": Y, "X": np.stack(X)}


def _mean_mse(model, img, rng, chunk: int = 25, **kw) -> np.ndarray:
    """Best-decoder MSE per rate over ``img`` (chunks of ``chunk`` images). Returns [R+1]."""
    parts = [digits_batch(model, img[i:i + chunk], rng, **kw)["mse"].min(-1) for i in range(0, len(img), chunk)]
    return np.concatenate(parts, 1).mean(1)


def run(out: str = "lab_out", seed: int = 0, quick: bool = False, show_progress: bool = True,
        Ks: tuple[int, ...] = (1, 2, 4)) -> dict:
    """Write ``compression_digits.{csv,md,png}`` and ``compression_digits_recon.png``."""
    out = out_dir(out)
    data = load_digits_split(seed)
    model = DigitModel(data["fit"], seed=seed)
    N = 1024 if quick else 4096
    test = data["test"][:100] if quick else data["test"]
    tune = data["tune"][:50] if quick else data["tune"]
    grid = (0.1, 0.5) if quick else (0.05, 0.1, 0.2, 0.5, 1.0)
    rows, chosen = [], {}
    jobs = [(K, shared) for K in Ks for shared in ((False, True) if K > 1 else (False,))]
    for K, shared in progress(jobs, "digits compression", enabled=show_progress):
        kw = {"K": K, "N": N, "shared_row": shared}
        tuned = np.stack([_mean_mse(model, tune, np.random.default_rng([seed, 3, K, shared, i]), sigma_w2=s, **kw)
                          for i, s in enumerate(grid)])
        best = tuned.argmin(0)
        evals = {g: _mean_mse(model, test, np.random.default_rng([seed, 4, K, shared, g]), sigma_w2=grid[g], **kw)
                 for g in set(best.tolist())}
        for R in range(MAX_RATE + 1):
            chosen[(K, shared, R)] = grid[best[R]]
            rows.append({"scheme": "shared row" if shared else "GLS", "K": K, "rate_bits": R, "L_max": 2 ** R,
                         "sigma_W2": grid[best[R]], "mse_per_pixel": float(evals[best[R]][R])})
    write_table(rows, out, "compression_digits", "8x8 digits: best-decoder per-pixel MSE of the right half vs rate")
    fig, axes = new_figure(1, width=6)
    colors = {1: "k", 2: "tab:blue", 4: "tab:red", 8: "tab:green"}
    for K, shared in jobs:
        r = [x for x in rows if x["K"] == K and (x["scheme"] == "shared row") == shared]
        axes[0].plot([x["rate_bits"] for x in r], [x["mse_per_pixel"] for x in r], color=colors.get(K),
                     ls="--" if shared else "-", marker="x" if shared else "o",
                     label=f"K={K} " + ("shared row" if shared else "GLS"))
    axes[0].set(xlabel="rate (bits)", ylabel="per-pixel MSE (best decoder)", title="8x8 digits, right half from 3x3 crops")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    png = save_figure(fig, out, "compression_digits")
    return {"png": str(png), "recon_png": _recon_figure(model, data["test"][:6], seed, N, chosen, out), "rows": rows}


def _recon_figure(model: DigitModel, img: np.ndarray, seed: int, N: int, chosen: dict, out) -> str:
    """Originals, decoder 0's side information, and the best decoder's crop + reconstruction at 2 and 6 bits."""
    cols = [("original", None), ("side info (dec. 0)", None)] + [(f"K={K}, {R} bits", (K, R))
                                                                for R in (2, 6) for K in (1, 4) if (K, False, R) in chosen]
    fig, _ = new_figure(len(cols), width=1.3, height=1.5 * len(img))
    fig.clf()
    grid = fig.subplots(len(img), len(cols), squeeze=False)
    runs = {kr: digits_batch(model, img, np.random.default_rng([seed, 5, *kr]), K=kr[0], N=N,
                             sigma_w2=chosen[(kr[0], False, kr[1])]) for _, kr in cols if kr}
    side = runs[next(kr for _, kr in cols if kr)]
    for i in range(len(img)):
        for j, (title, kr) in enumerate(cols):
            pic = img[i].copy()
            if kr or j == 1:
                r0 = side if j == 1 else runs[kr]
                best = r0["mse"][kr[1], i].argmin() if kr else 0  # the kept decoder: its crop and its estimate
                pic[:] = 0.25
                rc = POSITIONS[r0["pos"][i, best]]
                pic[rc[0]:rc[0] + CROP, rc[1]:rc[1] + CROP] = img[i, rc[0]:rc[0] + CROP, rc[1]:rc[1] + CROP]
                if kr:
                    pic[:, 4:] = r0["recon"][kr[1], i, best].reshape(8, 4)
            grid[i, j].imshow(pic, cmap="gray_r", vmin=0, vmax=1)
            grid[i, j].set_xticks([]), grid[i, j].set_yticks([])
            if i == 0:
                grid[i, j].set_title(title, fontsize=7)
    return str(save_figure(fig, out, "compression_digits_recon"))
