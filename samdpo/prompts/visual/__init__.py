"""Visual prompts without humans: CLIP saliency (gScoreCAM), the anatomical prior, dense-CRF masks,
boxes and points, and their refinement by SAM."""
