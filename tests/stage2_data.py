"""Stage-2 training data for tests: the stage-1 data with nested candidate masks of each (image, class) and
their annotations (graded against the label maps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samdpo.align.annotator import Annotation, annotate
from samdpo.align.candidates import candidate_levels, level_masks
from samdpo.train.prompt_data import ImagePrompts
from tests.prompt_rows import SIZE
from tests.stage1_data import training_data


def stage2_inputs(
    tmp_path: Path,
) -> tuple[
    np.ndarray, np.ndarray, list[ImagePrompts], dict[str, np.ndarray], list[str], dict[tuple[str, int], Annotation]
]:
    """Images, candidate levels (thresholds 0.3 to 0.6 of fixed probability maps), prompts, text embeddings,
    sample ids and the ``"score"`` annotation of every (sample id, class index)."""
    images, labels, prompts, texts = training_data(tmp_path)
    probs = np.zeros((len(images), 2, SIZE, SIZE), np.uint8)
    probs[:, 0, 4:14, 3:12] = 140
    probs[:, 0, 6:12, 5:10] = 200
    probs[:, 1, 19:29, 17:31] = 110
    levels = candidate_levels(probs, [0.3, 0.4, 0.5, 0.6])
    ids = [p.sample_id for p in prompts]
    annotations = {}
    for n, sample in enumerate(ids):
        for t in range(2):
            annotations[(sample, t)] = annotate(level_masks(levels[n, t], 4), labels[n] == t + 1, "score")
    return images, levels, prompts, texts, ids, annotations
