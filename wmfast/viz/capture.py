"""Per-head attention capture: `with capture_attention(model) as rec: model(...)`.

rec.maps    name -> attention probabilities [B, H, Q, K] float32 (CPU), one per attention call
rec.entropy name -> entropy per head [H] float64, in nats, averaged over the batch and the queries
rec.info    name -> facts for plotting: kind ("space", "time", "pair", "mha"), the layout of the
            batch axis, the number of keys, the uniform-attention maximum, the queries kept

Names come from module paths, made readable: `dynamics.blocks.2.spatial`,
`tokenizer.encoder.blocks.0.temporal`, `lam.encoder.window_head`, `act.decoder.layers.0.cross_attn`.
A module called again inside the context gets `#2`, `#3`, ... (keep="first" / "last" keep one).

How, and why it is free when off:
  * wmfast's own attention (the STT's SDPA calls, the pair-window op) checks one module flag
    (wmfast.nn.capture_flag.active) after its fused call; only while a context is open does it hand q and k
    here, where softmax(q k^T * scale) (+ the causal mask) is recomputed for that call alone. The
    model's outputs are untouched, so they equal the capture-off outputs bit for bit.
  * torch's nn.MultiheadAttention (ACT, LAPA) needs no edit: inside the context each instance gets
    a wrapping `forward` that runs the original call unchanged and then recomputes the per-head
    weights with F.multi_head_attention_forward(need_weights=True, average_attn_weights=False).
    nn.TransformerEncoderLayer's fused fast path never calls its attention module, so the layer's
    forward is wrapped instead (the weights recomputed from the layer's input and masks). The
    wrappers are removed on exit.
  * Compiled models (torch.compile) run eagerly inside the context (torch.compiler.set_stance
    "force_eager"), noted in rec.notes; outside it they run compiled as before.
"""
import contextlib
import functools
import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.errors import WmfastError
from wmfast.nn import capture_flag as flag

# Class name -> readable prefix for the models we ship; other models use their class name.
MODEL_NAMES = {"VideoTokenizer": "tokenizer", "TransformerLam": "lam", "ConvLam": "lam", "DynamicsModel": "dynamics"}
# Module-path parts dropped or renamed for readability.
DROP_PARTS = {"transformer", "_orig_mod"}
RENAME_PARTS = {"spatial_attn": "spatial", "temporal_attn": "temporal", "multihead_attn": "cross_attn"}
KEEP_CHOICES = ("all", "first", "last")


# -- which modules attend ------------------------------------------------------------------------
def attention_classes():
    """The module classes whose calls are captured (imported here: the models import wmfast.viz)."""
    from wmfast.models.lam import WindowedActionHead
    from wmfast.nn.transformer import Attention

    return (Attention, WindowedActionHead, nn.MultiheadAttention)


def model_roots(model, name=None) -> dict:
    """A model, a WorldModel (tokenizer / lam / dynamics), a dict name -> module or a list of
    modules -> {prefix: module}."""
    if isinstance(model, nn.Module):
        base = getattr(model, "_orig_mod", model)
        return {name or MODEL_NAMES.get(type(base).__name__, type(base).__name__.lower()): model}
    if isinstance(model, dict):
        roots = {}
        for key, m in model.items():
            if not isinstance(m, nn.Module):
                raise WmfastError(f"capture_attention: {key!r} is a {type(m).__name__}, not a torch module")
            roots[str(key)] = m
        return roots
    if all(hasattr(model, a) for a in ("tokenizer", "lam", "dynamics")):           # wmfast.WorldModel
        return {p: m for p, m in (("tokenizer", model.tokenizer), ("lam", model.lam),
                                  ("dynamics", model.dynamics)) if m is not None}
    if isinstance(model, (list, tuple)):
        roots = {}
        for m in model:
            roots.update(model_roots(m))
        return roots
    raise WmfastError(f"capture_attention: expected a torch module, a WorldModel, a dict or a list, "
                      f"got {type(model).__name__}")


def readable_name(prefix: str, path: str) -> str:
    parts = [RENAME_PARTS.get(p, p) for p in path.split(".") if p and p not in DROP_PARTS]
    return ".".join([prefix] + parts)


def attention_modules(model, name=None) -> dict:
    """Readable name -> attention module, for every attention module of the model(s)."""
    classes = attention_classes()
    found = {}
    for prefix, root in model_roots(model, name).items():
        for path, m in root.named_modules():
            if isinstance(m, classes) and m not in found.values():
                found[readable_name(prefix, path)] = m
    return found


# -- the record ------------------------------------------------------------------------------------
class AttentionRecord:
    """What one capture_attention() context saw (see the module docstring)."""

    def __init__(self):
        self.maps, self.entropy, self.info, self.notes = {}, {}, {}, []
        self.calls = {}     # name -> how many times the module ran inside the context
        self.expected = []  # names of all the model's attention modules (missing(): those that never ran)

    def missing(self) -> list:
        return [n for n in self.expected if n not in self.calls]

    def __repr__(self):
        return f"AttentionRecord({len(self.maps)} maps: {', '.join(self.maps)})"

    def summary(self) -> dict:
        """JSON-ready: name -> entropy per head, uniform maximum and shapes."""
        out = {}
        for name, h in self.entropy.items():
            info = self.info[name]
            out[name] = {"entropy_nats": [round(float(x), 6) for x in h],
                         "max_entropy_nats": round(info["max_entropy"], 6),
                         "log_num_keys": round(math.log(info["num_keys"]), 6),
                         **{k: info[k] for k in ("kind", "num_heads", "num_queries", "num_keys", "causal",
                                                 "shape", "batch_layout")}}
        return out


def entropy_per_head(probs):
    """probs [N, H, Q, K] -> entropy [H] float64 in nats, averaged over N and Q (0 log 0 = 0)."""
    return torch.special.entr(probs.double()).sum(-1).mean(dim=(0, 2))


def select_queries(num_queries: int, queries):
    """Rows to keep: None -> all; an int n -> n evenly spaced rows when there are more than n;
    a sequence -> those rows for calls that have them all (others keep every row)."""
    if queries is None:
        return None
    if isinstance(queries, int):
        if queries < 1:
            raise WmfastError(f"capture_attention: queries must be >= 1, got {queries}")
        if num_queries <= queries:
            return None
        return torch.linspace(0, num_queries - 1, queries).round().long().unique()
    rows = torch.as_tensor(list(queries), dtype=torch.long)
    if rows.numel() == 0 or int(rows.min()) < 0:
        raise WmfastError(f"capture_attention: query indices must be non-negative, got {list(queries)}")
    return rows if int(rows.max()) < num_queries else None


class AttentionRecorder:
    """Receives attention calls while a context is open and fills an AttentionRecord."""

    def __init__(self, names: dict, queries=None, keep: str = "all", to_cpu: bool = True):
        if keep not in KEEP_CHOICES:
            raise WmfastError(f"capture_attention: keep must be one of {KEEP_CHOICES}, got {keep!r}")
        self.names = {m: n for n, m in names.items()}      # module -> readable name
        self.queries, self.keep, self.to_cpu = queries, keep, to_cpu
        self.rec = AttentionRecord()

    def _entry_name(self, module):
        base = self.names.get(module)
        if base is None:          # a module of some other model running inside the context
            return None
        n = self.rec.calls.get(base, 0) + 1
        self.rec.calls[base] = n
        if n == 1 or self.keep == "last":
            return base
        return None if self.keep == "first" else f"{base}#{n}"

    @torch.no_grad()
    def record(self, module, q, k, causal: bool = False, pairs: bool = False, shape=None, scale=None, mask=None,
               bias=None):
        """q [N, H, Q, Dh], k [N, H, K, Dh] (or [B, T, P, H, Dh] each with pairs=True: the windows of
        frames t, t+1). Recomputes softmax(q k^T * scale) with the causal mask, or a boolean mask
        [Q, K] (True: may attend; cached rollouts), if any, plus a float score bias [H, Q, K] if any."""
        name = self._entry_name(module)
        if name is None:
            return
        if pairs:
            from wmfast.ops.reference import pair_windows

            B, T, P, H, D = q.shape
            q, k = (pair_windows(x).permute(0, 1, 3, 2, 4).flatten(0, 1) for x in (q, k))   # [B*(T-1), H, 2P, D]
            layout = {"batch": B, "windows": T - 1, "patches": P}
            kind = "pair"
        else:
            kind = "time" if causal or getattr(module, "axis", None) == "time" else "space"
            B, T, P = shape if shape is not None else (q.shape[0], 1, 1)
            layout = {"batch": B, "frames": T, "patches": P}
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        rows = select_queries(q.shape[-2], self.queries)
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        qs = q.to(work) if rows is None else q.to(work).index_select(-2, rows.to(q.device))
        scores = torch.matmul(qs, k.to(work).transpose(-1, -2)) * scale                    # [N, H, Q, K]
        if bias is not None:
            scores = scores + (bias if rows is None else bias.index_select(-2, rows.to(bias.device))).to(work)
        num_keys = k.shape[-2]
        qidx = torch.arange(q.shape[-2], device=q.device) if rows is None else rows.to(q.device)
        visible = torch.full((qidx.numel(),), num_keys, dtype=torch.float64)
        allowed = None
        if causal:                              # query i sees keys 0..i (SDPA's is_causal, top-left)
            allowed = torch.arange(num_keys, device=q.device)[None, :] <= qidx[:, None]     # [Q, K]
        elif mask is not None:
            allowed = mask.to(q.device).index_select(0, qidx)                               # [Q, K]
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
            visible = allowed.sum(-1).double().cpu()
        probs = torch.softmax(scores, dim=-1).float()
        self._store(name, probs, kind, layout, rows, causal, module, visible)

    @torch.no_grad()
    def record_weights(self, module, weights, layout):
        """Per-head weights [N, H, Q, K] already computed (nn.MultiheadAttention)."""
        name = self._entry_name(module)
        if name is None:
            return
        rows = select_queries(weights.shape[-2], self.queries)
        if rows is not None:
            weights = weights.index_select(-2, rows.to(weights.device))
        # keys each query may see (masked keys get weight 0), for the uniform-attention maximum
        visible = (weights > 0).sum(-1).double().mean(dim=(0, 1)).cpu()                   # [Q]
        self._store(name, weights.float(), "mha", layout, rows, False, module, visible)

    def _store(self, name, probs, kind, layout, rows, causal, module, visible):
        if self.to_cpu:
            probs = probs.cpu()
        N, H, Q, K = probs.shape
        self.rec.maps[name] = probs
        self.rec.entropy[name] = entropy_per_head(probs).cpu()
        self.rec.info[name] = {
            "kind": kind, "module": type(module).__name__, "num_heads": H, "num_queries": Q, "num_keys": K,
            "causal": causal, "shape": [N, H, Q, K], "batch_layout": layout,
            "queries": None if rows is None else rows.tolist(),
            # the entropy of uniform attention over the keys each query may see, averaged like the entropy
            "max_entropy": float(visible.clamp(min=1).log().mean()),
        }


# -- nn.MultiheadAttention: wrapped per instance while the context is open -------------------------
MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def mha_weights(m: nn.MultiheadAttention, args, kwargs):
    """Per-head attention weights [N, H, L, S] of the call m(*args, **kwargs), recomputed the way
    torch's own need_weights=True path does, without dropout."""
    bound = MHA_SIGNATURE.bind(m, *args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query, key, value = a["query"], a["key"], a["value"]
    batched = query.dim() == 3
    if m.batch_first and batched:
        query, key, value = (x.transpose(0, 1) for x in (query, key, value))
    separate = not m._qkv_same_embed_dim
    _, weights = F.multi_head_attention_forward(
        query, key, value, m.embed_dim, m.num_heads, m.in_proj_weight, m.in_proj_bias, m.bias_k, m.bias_v,
        m.add_zero_attn, 0.0, m.out_proj.weight, m.out_proj.bias, training=False,
        key_padding_mask=a["key_padding_mask"], need_weights=True, attn_mask=a["attn_mask"],
        use_separate_proj_weight=separate, q_proj_weight=m.q_proj_weight if separate else None,
        k_proj_weight=m.k_proj_weight if separate else None, v_proj_weight=m.v_proj_weight if separate else None,
        average_attn_weights=False, is_causal=a["is_causal"])
    weights = weights if batched else weights.unsqueeze(0)                                  # [N, H, L, S]
    return weights, {"batch": weights.shape[0], "batch_first": bool(m.batch_first)}


ENCODER_LAYER_SIGNATURE = inspect.signature(nn.TransformerEncoderLayer.forward)


def encoder_layer_call(layer: nn.TransformerEncoderLayer, args, kwargs):
    """The self-attention call inside layer(*args, **kwargs), as (args, kwargs) for mha_weights."""
    bound = ENCODER_LAYER_SIGNATURE.bind(layer, *args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    x, padding = a["src"], a["src_key_padding_mask"]
    if x.is_nested:           # nn.TransformerEncoder packed padded sequences: unpack, mask the padding
        # (the padded queries' rows, never computed by the model, come out of zero inputs)
        lengths = [t.shape[-2] for t in x.unbind()]
        x = x.to_padded_tensor(0.0)                                                        # [N, L, E]
        padding = torch.arange(x.shape[1], device=x.device)[None, :] >= torch.tensor(lengths, device=x.device)[:, None]
    if layer.norm_first:
        x = layer.norm1(x)
    return (x, x, x), {"attn_mask": a["src_mask"], "key_padding_mask": padding, "is_causal": a["is_causal"]}


def wrap_forward(module, recorder: AttentionRecorder, attn: nn.MultiheadAttention, to_mha_call=None):
    """Give `module` an instance forward that runs the original unchanged, then records the per-head
    weights of `attn` for the same call. Returns the undo function."""
    original = module.forward

    @functools.wraps(original)
    def forward_and_record(*args, **kwargs):
        out = original(*args, **kwargs)
        if flag.active:
            with torch.no_grad():
                call = to_mha_call(module, args, kwargs) if to_mha_call else (args, kwargs)
                weights, layout = mha_weights(attn, *call)
            recorder.record_weights(attn, weights, layout)
        return out

    had_own = "forward" in module.__dict__
    module.forward = forward_and_record
    return lambda: setattr(module, "forward", original) if had_own else module.__dict__.pop("forward", None)


# -- the context -----------------------------------------------------------------------------------
@contextlib.contextmanager
def capture_attention(model, queries=None, keep: str = "all", to_cpu: bool = True, name=None):
    """Record every attention call of `model` run inside the block; yields an AttentionRecord.

    model: a module (tokenizer, LAM, dynamics, ACT policy, ... or a compiled one), a WorldModel,
    a dict prefix -> module, or a list of modules. queries: None (all), an int n (at most n evenly
    spaced query rows per call) or a list of query rows (for calls that have them). keep: "all"
    (repeat calls as name#2, ...), "first" or "last". to_cpu: move maps to the CPU. name: the
    prefix for a single module (default from its class: tokenizer, lam, dynamics, ...).
    """
    if flag.active:
        raise WmfastError("capture_attention: a capture is already open (contexts do not nest)")
    modules = attention_modules(model, name)
    recorder = AttentionRecorder(modules, queries=queries, keep=keep, to_cpu=to_cpu)
    rec = recorder.rec
    rec.expected = list(modules)      # every attention module of the model, by name
    roots = model_roots(model, name)
    all_modules = [m for root in roots.values() for m in root.modules()]
    undo = []
    with contextlib.ExitStack() as stack:
        if any(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in all_modules):
            rec.notes.append("compiled model: the captured calls ran eagerly (torch.compile is bypassed "
                             "inside capture_attention)")
        # Compiled code anywhere (a compiled model or a compiled function around it) runs eagerly here.
        stack.enter_context(torch.compiler.set_stance("force_eager"))
        # An encoder layer's fast path skips its self_attn module: record at the layer instead.
        in_layers = {}
        for m in all_modules:
            if isinstance(m, nn.TransformerEncoderLayer) and m.self_attn in recorder.names:
                in_layers[m.self_attn] = m
        for m in modules.values():
            if m in in_layers:
                undo.append(wrap_forward(in_layers[m], recorder, m, encoder_layer_call))
            elif isinstance(m, nn.MultiheadAttention):
                undo.append(wrap_forward(m, recorder, m))
        flag.recorder, flag.active = recorder, True
        try:
            yield rec
        finally:
            flag.active, flag.recorder = False, None
            for restore in undo:
                restore()
