"""Building blocks: positional encodings, FSQ, patch embedding, the space-time transformer."""
from wmfast.nn.fsq import FSQ  # noqa: F401
from wmfast.nn.patch import PatchEmbedding, PixelHead, patchify, unpatchify  # noqa: F401
from wmfast.nn.pe import sincos_1d, spatial_pe, split_dims, temporal_pe  # noqa: F401
from wmfast.nn.transformer import STTransformer  # noqa: F401
from wmfast.nn.vq import VectorQuantizer, plot_code_usage  # noqa: F401
