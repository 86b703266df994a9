"""The frozen SAM's inference through ONNX Runtime: image encoder and single-mask decoder, exported once.

Inference-only jobs (embedding, zero-shot, box refinement, candidate and test prediction) attach an
:class:`OnnxSam` to their :class:`~samdpo.sam.prompted.PromptedSam` with :func:`attach_engine`
(setting ``sam.engine``: ``onnxruntime``, the default, or ``torch``). Training never does: the
model uses the engine only on the CPU with gradients off, so a training step is always torch.

Two graphs are exported with ``torch.onnx.export`` (opset 17) from the model's own weights:

- ``encoder``: (1, 3, s, s) float32 preprocessed image -> (1, C, h, w) embedding (batch 1: TinyViT's
  reshapes fix the batch when traced; images run one by one through the same session);
- ``decoder``: (1, C, h, w) embedding and (K, n, C) sparse prompt tokens -> (K, 1, 4h, 4w) mask logits
  and (K, 1) IoU, as :func:`samdpo.sam.decoding.decode_single_mask`, with the dense positional
  encoding and the "no mask" embedding folded in; K (all classes of one image) and n are dynamic.

The preprocessing, the prompt encoder and the text projections stay in torch (a few small matrix
products). A file is named by a SHA-256 over the export version, its part, the weights it holds and
the input shape (:func:`graph_key`), and written under ``sam.engine_cache`` atomically, so another
model version gets another file and an existing file is never taken for other weights; a file that
ONNX Runtime cannot load is exported again (one log line). Measured on this CPU against OpenVINO
(``benchmarks/engine_benchmark.py``): ONNX Runtime decodes faster at float32; OpenVINO's default
bfloat16 on AVX-512 CPUs is faster still but moves logits by 0.3, beyond the 1e-3 this module promises.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samdpo import atomic
from samdpo.errors import ConfigError
from samdpo.sam.settings import SamSettings
from samdpo.settings import parse_settings

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from samdpo.sam.prompted import PromptedSam

#: Bumped whenever the exported graphs change, so older files are not read.
EXPORT_VERSION = 1
OPSET = 17
_LOG = logging.getLogger(__name__)


#: The packages each engine needs: onnxruntime runs the graphs, onnx is what torch.onnx.export writes with.
PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "torch": ()}


def require_packages(engine: str) -> None:
    """ConfigError naming ``sam.engine`` and the package when one the engine needs is not installed
    (looked up without importing it, so the settings check at ``snakemake`` start stays fast)."""
    import importlib.util

    for package in PACKAGES[engine]:
        try:
            found = importlib.util.find_spec(package) is not None
        except ValueError:  # a module set to None in sys.modules (how the tests hide a package)
            found = False
        if not found:
            raise ConfigError(
                f"sam.engine {engine} needs the package {package}, which is not installed: pip install {package} "
                "(or set sam.engine: torch)"
            )


def _onnxruntime() -> Any:
    """``onnxruntime``, imported after :func:`require_packages` checked it and ``onnx``."""
    require_packages("onnxruntime")
    import onnxruntime

    return onnxruntime


def _decoder_module(model: PromptedSam, height: int, width: int) -> nn.Module:
    """``decode_single_mask`` as a module of (embedding, sparse) with the dense inputs as constants."""
    import torch

    from samdpo.sam.decoding import decode_single_mask

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            encoder = model.sam.prompt_encoder
            self.decoder = model.sam.mask_decoder
            self.register_buffer("image_pe", encoder.get_dense_pe().detach().clone())
            dense = encoder.no_mask_embed.weight.detach().reshape(1, -1, 1, 1).expand(1, -1, height, width)
            self.register_buffer("dense", dense.contiguous().clone())

        def forward(self, embedding: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return decode_single_mask(self.decoder, embedding, self.image_pe, sparse, self.dense)

    return Decoder().eval()


def graph_key(part: str, module: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The :func:`samdpo.fingerprint.fingerprint` naming an exported graph: export version, opset, part,
    input shape and every weight and buffer of ``module``."""
    from samdpo.fingerprint import fingerprint

    graph = {"version": EXPORT_VERSION, "opset": OPSET, "part": part, "input": list(input_shape)}
    return fingerprint({**graph, "weights": module.state_dict()})


def _export(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    names: dict[str, Any],
    only_if_missing: bool = False,
) -> None:
    """Write ``module`` as ONNX to ``path`` atomically (:func:`samdpo.atomic.atomic_path`), under an exclusive
    lock on the cache folder's ``.export.lock``, so jobs that need the same graph at once export it once
    (``only_if_missing``: skipped when the file exists once the lock is held). The tracing exporter's
    deprecation warnings are muted."""
    import fcntl

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if only_if_missing and path.is_file():  # another job exported it while this one waited
            return
        # under the lock no other job writes here, so atomic_path may clear a killed export's temporary
        with atomic.atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    module,
                    example,
                    str(tmp),
                    input_names=names["inputs"],
                    output_names=names["outputs"],
                    dynamic_axes=names["dynamic"],
                    opset_version=OPSET,
                    dynamo=False,
                )
            except Exception as exc:  # the exporter raises many types (tracing, symbolic, protobuf size)
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ConfigError(
                    f"{path.name}: this SAM's {path.name.split('-')[0]} does not export to ONNX ({first}); "
                    "set sam.engine: torch"
                ) from exc


class OnnxSam:
    """ONNX Runtime sessions for one :class:`PromptedSam`'s encoder and decoder, exported on first use.

    Args:
        model: the model whose current weights are exported (frozen from here on).
        cache: folder of the exported files (``sam.engine_cache``).
        threads: intra-op threads of each session (the job's ``--threads``).
    """

    def __init__(self, model: PromptedSam, cache: Path, threads: int) -> None:
        self.ort = _onnxruntime()
        self.model = model
        self.cache = Path(cache)
        self.threads = max(1, int(threads))
        self._sessions: dict[tuple[str, tuple[int, ...]], Any] = {}

    def _session(self, part: str, shape: tuple[int, ...], build: Any, names: dict[str, Any]) -> Any:
        """The session of ``part`` for inputs of ``shape``, from its cached file (exported when absent or unreadable).

        ``build()`` gives the module and its example inputs; it runs once per part and shape (the
        weights are frozen, so the key is computed once).
        """
        if (part, shape) in self._sessions:
            return self._sessions[part, shape]
        module, example = build()
        path = self.cache / f"{part}-{graph_key(part, module, shape)}.onnx"
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not path.is_file():
            _export(module, example, path, names, only_if_missing=True)
        try:
            session = self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf types
            _LOG.warning("%s: not a readable ONNX graph (%s); exporting it again", path, str(exc).splitlines()[0])
            _export(module, example, path, names)
            session = self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._sessions[part, shape] = session
        return session

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) float32 preprocessed images -> (B, C, h, w) embeddings, one image per run."""
        import numpy as np
        import torch

        names = {"inputs": ["image"], "outputs": ["embedding"], "dynamic": {}}
        session = self._session(
            "encoder",
            (1, *inputs.shape[1:]),
            lambda: (self.model.sam.image_encoder, (inputs[:1].float().contiguous(),)),
            names,
        )
        rows = [session.run(None, {"image": row[None]})[0] for row in inputs.float().contiguous().numpy()]
        return torch.from_numpy(np.concatenate(rows))

    def decode(self, embedding: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``decode_single_mask`` for K prompts on one image: (1, C, h, w), (K, n, C) -> (K, 1, 4h, 4w), (K, 1)."""
        import torch

        height, width = embedding.shape[-2:]
        names = {
            "inputs": ["embedding", "sparse"],
            "outputs": ["masks", "iou"],
            "dynamic": {"sparse": {0: "prompts", 1: "tokens"}, "masks": {0: "prompts"}, "iou": {0: "prompts"}},
        }
        session = self._session(
            "decoder",
            tuple(embedding.shape),
            lambda: (_decoder_module(self.model, height, width), (embedding.float(), sparse.float())),
            names,
        )
        masks, iou = session.run(None, {"embedding": _numpy(embedding), "sparse": _numpy(sparse)})
        return torch.from_numpy(masks), torch.from_numpy(iou)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a contiguous float32 array."""
    return tensor.detach().float().contiguous().numpy()


def attach_engine(model: PromptedSam, sam: Mapping[str, Any], threads: int | None = None) -> PromptedSam:
    """``model`` with its frozen inference routed through ``sam.engine`` (``torch``: unchanged); returns it.

    Call only where the model's weights no longer change (inference jobs). The engine runs on the
    CPU with gradients off; a model on a GPU keeps running torch there.
    """
    import torch

    settings = parse_settings(SamSettings, sam, "sam")
    if settings.engine == "onnxruntime":
        count = torch.get_num_threads() if threads is None else threads
        model.engine = OnnxSam(model, Path(settings.engine_cache), count)
    return model
