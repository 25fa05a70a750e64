"""Model-free coupling primitives for lossless draft verification (see /work/shared/ALGORITHMS.md).

Notation: p = target, q = draft (P, Q for Alice/Bob in the communication-free protocols); tensors are
float64, batched over leading dims, last dim = vocabulary V.

* :mod:`.maximal`   -- TV, overlap, residual, maximal (speculative-sampling) coupling (section 1).
* :mod:`.comm_free` -- Gumbel / weighted-MinHash coupling without communication (section 5).
* :mod:`.gls`       -- Gumbel-max list sampling and its list-matching bound (section 6).
* :mod:`.kseq`      -- SpecTr K-SEQ: beta, rho*, acceptance, residual (section 3(b2)).
* :mod:`.optimal`   -- optimal k-draft acceptance: nested sets, brute force, OTM LP (sections 3(b1), 7).
"""

from .comm_free import (
    gumbel_coupled_sample,
    gumbel_match_prob,
    match_lower_bound,
    race_argmin,
    tight_lower_bound,
    wmh_coupled_sample,
    wmh_match_prob,
)
from .gls import gls_sample, list_matching_bound
from .kseq import kseq_acceptance, kseq_beta, kseq_residual, kseq_rho
from .maximal import maximal_coupling, overlap, residual, tv
from .optimal import optimal_acceptance, optimal_acceptance_bruteforce, optimal_acceptance_lp

__all__ = [
    "tv", "overlap", "residual", "maximal_coupling",
    "gumbel_match_prob", "wmh_match_prob", "match_lower_bound", "tight_lower_bound",
    "race_argmin", "gumbel_coupled_sample", "wmh_coupled_sample",
    "gls_sample", "list_matching_bound",
    "kseq_beta", "kseq_rho", "kseq_acceptance", "kseq_residual",
    "optimal_acceptance", "optimal_acceptance_bruteforce", "optimal_acceptance_lp",
]
