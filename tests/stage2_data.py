"""Stage-2 training data for tests: the stage-1 data with nested candidate masks of each (image, class) and
their annotations (graded against the label maps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samdpo.align.annotator import Annotation, annotate
from samdpo.align.candidates import CandidateSet, CandidateSettings, pack_masks, threshold_masks
from samdpo.train.prompt_data import ImagePrompts
from tests.prompt_rows import SIZE
from tests.stage1_data import training_data


def stage2_inputs(
    tmp_path: Path,
) -> tuple[
    np.ndarray, CandidateSet, list[ImagePrompts], dict[str, np.ndarray], list[str], dict[tuple[str, int], Annotation]
]:
    """Images, candidates (thresholds 0.3 to 0.6 of fixed probability maps), prompts, text embeddings,
    sample ids and the ``"score"`` annotation of every (sample id, class index)."""
    images, labels, prompts, texts = training_data(tmp_path)
    probs = np.zeros((len(images), 2, SIZE, SIZE), np.uint8)
    probs[:, 0, 4:14, 3:12] = 140
    probs[:, 0, 6:12, 5:10] = 200
    probs[:, 1, 19:29, 17:31] = 110
    masks = threshold_masks(probs, [0.3, 0.4, 0.5, 0.6])
    candidates = CandidateSet(
        pack_masks(masks), {"count": 4, "size": SIZE, "candidates": CandidateSettings().describe()}
    )
    ids = [p.sample_id for p in prompts]
    annotations = {}
    for n, sample in enumerate(ids):
        for t in range(2):
            annotations[(sample, t)] = annotate(masks[n, t], labels[n] == t + 1, "score")
    return images, candidates, prompts, texts, ids, annotations
