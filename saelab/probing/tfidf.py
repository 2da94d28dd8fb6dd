"""TF-IDF bag-of-words baseline (MOSAIC's text baseline): 1–2-grams, vocabulary fitted on the training rows only.

tfidf(t, d) = tf(t, d) · idf(t), idf(t) = ln((1 + n) / (1 + df(t))) + 1 (sklearn's smooth idf), each row then
L2-normalised; n and df count TRAINING texts only. Vocabulary: the `tfidf_max_features` (20,000) most frequent
1–2-grams of the training texts (sklearn's default token pattern, lower-cased). No model is needed.
"""

from __future__ import annotations

import numpy as np

from saelab.errors import BadInputError
from saelab.probing.feature_set import FeatureSet, SourceParams


def tfidf_source(params: SourceParams, texts: list[str], *, fit_texts_mask=None, **_) -> FeatureSet:
    from sklearn.feature_extraction.text import TfidfVectorizer

    if fit_texts_mask is None:
        train = np.arange(len(texts))
        notes = ["No fit mask was given: the TF-IDF vocabulary was fitted on every text."]
    else:
        mask = np.asarray(fit_texts_mask, dtype=bool)
        if mask.shape != (len(texts),) or not mask.any():
            raise BadInputError("fit_texts_mask must be a boolean mask over the texts with at least one training row.")
        train, notes = np.flatnonzero(mask), []
    vec = TfidfVectorizer(ngram_range=(1, 2), max_features=params.tfidf_max_features, dtype=np.float32)
    try:
        vec.fit([texts[i] for i in train])
    except ValueError as err:  # "empty vocabulary": the training texts hold no words
        raise BadInputError(f"TF-IDF found no words in the training texts ({err}); check the text column.") from err
    X = vec.transform(texts).toarray()
    vocab = vec.get_feature_names_out()
    return FeatureSet(
        X=X,
        names=[f"tfidf {w!r}" for w in vocab],
        source=params.source,
        params={**params.to_dict(), "ngram_range": [1, 2], "fit_rows": int(len(train)), "vocabulary": len(vocab)},
        extra={
            "formula": "x_t = tf(t, d) · (ln((1 + n_train) / (1 + df_train(t))) + 1), row L2-normalised; "
            f"1–2-grams, top {params.tfidf_max_features} by training frequency",
            "notes": notes,
            "n_truncated": 0,
        },
    )
