"""One constructor for the quantizers a model may use.

Every quantizer has the same interface:
  q, aux_loss = quantizer(z)          # training: straight-through quantize, plus its loss
  q = quantizer.quantize(z)           # inference
  idx = quantizer.indices(q)          # [..., D] -> [...] int64
  q = quantizer.latents(idx)          # [...] -> [..., D]
  quantizer.codebook_size
"""
from wmfast.errors import WmfastError
from wmfast.nn.fsq import FSQ


def make_quantizer(kind: str, dim: int, levels: int = 2, codebook_size: int = 0, **vq_options):
    if kind == "fsq":
        return FSQ(dim, levels)
    if kind == "vq":
        if codebook_size < 1:
            raise WmfastError("quantizer 'vq' needs codebook_size >= 1")
        from wmfast.nn.vq import VectorQuantizer

        return VectorQuantizer(codebook_size, dim, **vq_options)
    raise WmfastError(f"unknown quantizer {kind!r} (expected 'fsq' or 'vq')")
