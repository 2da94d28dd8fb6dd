"""The bag-of-words baseline: LASSO on word/phrase indicators; each selected term is a hypothesis.

Same vocabulary as the keyword rules (1–2-grams, stop words removed, negations kept, min_df 3 on the
training split, at most `MAX_FEATURES` most frequent), same selection (`select_features`, α bisected to n
non-zero) and the same held-out validation, so the user sees whether the SAE's hypotheses are more often
significant and less redundant than single words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saelab.hypotheses.interpret import KeywordRule, term_matrix
from saelab.hypotheses.results import MethodResult, build_method
from saelab.hypotheses.select import select_features
from saelab.hypotheses.validate import validate

MAX_FEATURES = 5_000


def examples_for(
    texts: Sequence[str], y: np.ndarray, holds: np.ndarray, rule, n: int, order: np.ndarray | None = None
) -> list[dict]:
    """Up to n held-out texts where the hypothesis holds (in `order` if given), with the evidence terms."""
    idx = np.flatnonzero(holds) if order is None else [i for i in order if holds[i]]
    return [{"text": texts[i], "evidence": rule.evidence(texts[i]), "target": float(y[i])} for i in list(idx)[:n]]


def bag_of_words(
    train_texts: Sequence[str],
    y_train: np.ndarray,
    test_texts: Sequence[str],
    y_test: np.ndarray,
    *,
    binary: bool,
    n: int = 20,
    method: str = "lasso",
    n_examples: int = 3,
) -> MethodResult:
    """Select n terms on the training split and validate "mentions <term>" on the held-out split."""
    X_train, vocab = term_matrix(train_texts, max_features=MAX_FEATURES)
    sel = select_features(X_train, y_train, n=n, method=method, kind="binary" if binary else "numeric")
    X_test, _ = term_matrix(test_texts, vocabulary=[vocab[j] for j in sel.indices])
    H = X_test.toarray() > 0
    rows = []
    for rank, (j, coef) in enumerate(zip(sel.indices, sel.coefficients), start=1):
        rule = KeywordRule([vocab[j]])
        rows.append(
            {
                "rank": rank,
                "label": rule.label,
                "source": "bag-of-words",
                "proxy": False,
                "feature": int(j),
                "feature_name": vocab[j],
                "selection_coef": float(coef),
                "terms": rule.terms,
                "fidelity_f1": None,
                "examples": examples_for(test_texts, y_test, H[:, rank - 1], rule, n_examples),
            }
        )
    val = validate(H, y_test, binary=binary)
    selection = {"method": sel.method, "alpha": sel.alpha, "n_nonzero": sel.n_nonzero, "vocabulary": len(vocab)}
    return build_method("bow", rows, H, val, selection, list(sel.notes))
