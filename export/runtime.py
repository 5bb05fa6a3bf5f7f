"""onnxruntime execution of an exported world model: `OnnxBackend`.

One InferenceSession per graph: on the CPU, its onnxruntime-rewritten form (NAME.ort.onnx, see
export/fusions.py) where the export has one. Tensors go in and come out as torch tensors on the
backend's device, bound to ORT by pointer (IOBinding), so nothing is copied between graphs or
through numpy. CUDA EP when asked for (onnxruntime-gpu), CPU EP elsewhere. A session whose nodes do
not all run on the asked provider warns (or, with strict=True, fails), because onnxruntime
otherwise falls back to the CPU silently.

The backend implements the rollout backend protocol that `wmfast.World` calls (see
wmfast.rollout.backends), over the exported graphs of the models' own methods: the context caches
(KVCache, allocated once by the World) go into the MaskGIT step graph by pointer, so a step moves
no data but the new frame's. It is registered as World(backend="onnx").
"""
import json
import os
import warnings
from collections import Counter

import torch

from wmfast.errors import WmfastError
from wmfast.export.graphs import resolve_dim
from wmfast.export.manifest import check_against_run, read_manifest
from wmfast.nn.kv_cache import KVCache

TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}
NUMPY_DTYPES = {"float32": "float32", "int64": "int64", "bool": "bool"}
CPU_EP, CUDA_EP = "CPUExecutionProvider", "CUDAExecutionProvider"
MAX_SPECIALIZED = 8   # CPU sessions per graph with the symbolic dims fixed (then the dynamic one serves)


def _ort():
    import onnxruntime

    return onnxruntime


def resolve_providers(device: torch.device, providers=None) -> list:
    """The provider list for a device: CUDA EP (+ CPU for shape ops) on cuda, the CPU EP on cpu."""
    ort = _ort()
    available = ort.get_available_providers()
    if providers:
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        missing = [p for p in names if p not in available]
        if missing:
            raise WmfastError(f"onnxruntime {ort.__version__} has no provider(s) {missing} (available: {available})")
        return list(providers)
    if device.type == "cuda":
        if CUDA_EP not in available:
            raise WmfastError(f"device {device} asked for, but this onnxruntime ({ort.__version__}) has no "
                              f"{CUDA_EP} (available: {available}); install onnxruntime-gpu (pip install "
                              "'wmfast[gpu]') in place of onnxruntime")
        opts = {"device_id": str(device.index or 0),
                # ORT and torch share torch's current stream, so no sync is needed between them.
                "user_compute_stream": str(torch.cuda.current_stream(device).cuda_stream),
                "arena_extend_strategy": "kSameAsRequested", "use_tf32": "0"}
        return [(CUDA_EP, opts), CPU_EP]
    if device.type != "cpu":
        raise WmfastError(f"the onnx backend runs on cpu or cuda, not {device}")
    return [CPU_EP]


def session_options(strict: bool = False, threads: int = None, profile_prefix: str = None):
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3          # errors only; provider placement is checked explicitly
    if threads:
        so.intra_op_num_threads = threads
    if strict:
        # Session creation fails if any node would have to run on the CPU instead.
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def nodes_per_provider(profile_json_path) -> dict:
    """Count the nodes each execution provider ran, from an ORT profiling trace."""
    with open(profile_json_path) as f:
        events = json.load(f)
    seen = {}
    for ev in events:
        args = ev.get("args", {})
        if ev.get("cat") == "Node" and "provider" in args:
            seen[ev["name"].rsplit("_kernel_time", 1)[0]] = args["provider"]
    return dict(Counter(seen.values()))


class GraphSession:
    """One ONNX graph: an InferenceSession plus the manifest's I/O specs, run through IOBinding."""

    def __init__(self, path, entry: dict, device: torch.device, providers: list, strict=False, threads=None,
                 cuda_graph=False):
        ort = _ort()
        self.name = os.path.basename(path).split(".")[0]     # "maskgit_step" from maskgit_step[.ort].onnx
        self.path, self.entry, self.device = path, entry, device
        self.inputs, self.outputs = entry["inputs"], entry["outputs"]
        if cuda_graph:
            providers = [(p[0], dict(p[1], enable_cuda_graph="1")) if isinstance(p, tuple) and p[0] == CUDA_EP else p
                         for p in providers]
        self.providers = providers
        try:
            self.session = ort.InferenceSession(path, sess_options=session_options(strict, threads),
                                                providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files and placements
            raise WmfastError(f"{path}: onnxruntime cannot load this graph: {str(e).strip().splitlines()[0]}") from e
        asked = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if self.session.get_providers()[0] != asked:
            raise WmfastError(f"{path}: onnxruntime did not start {asked} (running on {self.session.get_providers()}); "
                              "check that the CUDA and cuDNN libraries onnxruntime-gpu needs are installed")
        self.strict, self.threads = strict, threads
        self._specialized = {}   # CPU: sorted symbolic dim sizes -> a session specialized to them
        self.device_type = "cuda" if device.type == "cuda" else "cpu"
        self.device_id = (device.index or 0) if device.type == "cuda" else 0
        self.cuda_graph = cuda_graph
        self._static = {}   # CUDA graphs: shape key -> (run options naming its gpu_graph_id, inputs, outputs, binding)
        self._checked = {}  # input shapes -> symbolic dim sizes (each new shape is checked once)

    # -- shapes -----------------------------------------------------------------------------
    def _sizes(self, tensors) -> dict:
        """Check ranks and static dims of the inputs; return the sizes of the symbolic dims."""
        if len(tensors) != len(self.inputs):
            raise WmfastError(f"graph {self.name} takes {len(self.inputs)} input(s), got {len(tensors)}")
        sizes = {}
        for spec, x in zip(self.inputs, tensors):
            shape = spec["shape"]
            if not isinstance(x, torch.Tensor) or x.dim() != len(shape):
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise WmfastError(f"graph {self.name}: {spec['name']} must have shape {shape}, got {got}")
            for want, got in zip(shape, x.shape):
                if isinstance(want, int) and want != got:
                    raise WmfastError(f"graph {self.name}: {spec['name']} must have shape {shape}, got {tuple(x.shape)}")
                if isinstance(want, str) and " " not in want:
                    if sizes.setdefault(want, got) != got:
                        raise WmfastError(f"graph {self.name}: inputs disagree on {want} ({sizes[want]} vs {got})")
        for spec, x in zip(self.inputs, tensors):   # derived dims ("steps + 1") agree with their roots
            for want, got in zip(spec["shape"], x.shape):
                if isinstance(want, str) and " " in want and want.split()[0] in sizes:
                    if resolve_dim(want, sizes) != got:
                        raise WmfastError(f"graph {self.name}: {spec['name']} must have shape {spec['shape']}, "
                                          f"got {tuple(x.shape)}")
                elif isinstance(want, str) and " " in want:
                    root, sign, k = want.split()
                    sizes[root] = got - int(k) if sign == "+" else got + int(k)
        return sizes

    def _bind(self, binding, spec, tensor, is_input: bool):
        shape = tuple(tensor.shape)
        bind = binding.bind_input if is_input else binding.bind_output
        bind(spec["name"], self.device_type, self.device_id, NUMPY_DTYPES[spec["dtype"]], shape, tensor.data_ptr())

    def _prepare(self, tensors):
        return [x.to(device=self.device, dtype=TORCH_DTYPES[spec["dtype"]]).contiguous()
                for spec, x in zip(self.inputs, tensors)]

    def _empty_outputs(self, sizes):
        return [torch.empty(tuple(resolve_dim(d, sizes) for d in spec["shape"]), dtype=TORCH_DTYPES[spec["dtype"]],
                            device=self.device) for spec in self.outputs]

    # -- run --------------------------------------------------------------------------------
    def __call__(self, *tensors):
        """torch tensors in -> tuple of torch tensors (on the backend's device) out."""
        key = tuple(tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in tensors)
        sizes = self._checked.get(key)
        if sizes is None:
            sizes = self._checked[key] = self._sizes(tensors)
        if self.cuda_graph:
            return self._run_cuda_graph(tensors, sizes)
        inputs, outputs = self._prepare(tensors), self._empty_outputs(sizes)   # alive until the run ends
        session = self._session_for(sizes)
        self._run(self._binding(inputs, outputs, session), session=session)
        return tuple(outputs)

    def _session_for(self, sizes: dict):
        """On the CPU, a session with the graph's symbolic dims (batch, frames, slots) fixed to these
        sizes: onnxruntime then folds the shape arithmetic and plans memory for them (~5% faster
        MaskGIT steps at tinyworlds' shape, same outputs). One per size, up to MAX_SPECIALIZED per
        graph; then, and on CUDA (CUDA graphs fix shapes already), the dynamic session."""
        if self.device_type != "cpu" or not sizes:
            return self.session
        key = tuple(sorted(sizes.items()))
        if key not in self._specialized and len(self._specialized) < MAX_SPECIALIZED:
            options = session_options(self.strict, self.threads)
            for name, size in key:
                options.add_free_dimension_override_by_name(name, int(size))
            self._specialized[key] = _ort().InferenceSession(self.path, sess_options=options,
                                                             providers=self.providers)
        return self._specialized.get(key, self.session)

    def _binding(self, inputs, outputs, session=None):
        """An IOBinding of torch tensors, by pointer (no copies)."""
        binding = (session or self.session).io_binding()
        for spec, x in zip(self.inputs, inputs):
            self._bind(binding, spec, x, True)
        for spec, y in zip(self.outputs, outputs):
            self._bind(binding, spec, y, False)
        return binding

    def _run(self, binding, run_options=None, session=None):
        try:
            (session or self.session).run_with_iobinding(binding, run_options)
        except Exception as e:
            raise WmfastError(f"graph {self.name}: onnxruntime failed: {str(e).strip().splitlines()[0]}") from e

    def _run_cuda_graph(self, tensors, sizes):
        """CUDA graphs need fixed buffer addresses: one set of static buffers (and one captured
        graph, told apart by gpu_graph_id) per input shape; new inputs are copied in place. A KV
        cache (inputs named cache_*) is bound as it is, not copied: the World passes the same
        cache buffers on every step, so they are the static buffers."""
        key = tuple(tuple(x.shape) for x in tensors)
        if key not in self._static:
            inputs = [x if spec["name"].startswith("cache_") else x.clone()
                      for spec, x in zip(self.inputs, self._prepare(tensors))]
            outputs = self._empty_outputs(sizes)
            binding = self._binding(inputs, outputs)
            options = _ort().RunOptions()
            options.add_run_config_entry("gpu_graph_id", str(len(self._static) + 1))
            self._static[key] = (options, inputs, outputs, binding)
        options, inputs, outputs, binding = self._static[key]
        for buf, x in zip(inputs, tensors):
            if buf.data_ptr() != x.data_ptr():
                buf.copy_(x)
        self._run(binding, options)
        return tuple(o.clone() for o in outputs)

    def placement(self, *tensors) -> dict:
        """Run once with ORT profiling and count the nodes per execution provider."""
        import tempfile

        ort = _ort()
        with tempfile.TemporaryDirectory() as tmp:
            so = session_options(profile_prefix=os.path.join(tmp, "profile"))
            providers = [(p[0], {k: v for k, v in p[1].items() if k != "enable_cuda_graph"})
                         if isinstance(p, tuple) else p for p in self.providers]
            session = ort.InferenceSession(self.path, sess_options=so, providers=providers)
            feeds = {spec["name"]: x.detach().to("cpu", TORCH_DTYPES[spec["dtype"]]).numpy()
                     for spec, x in zip(self.inputs, tensors)}
            session.run(None, feeds)
            return nodes_per_provider(session.end_profiling())


class OnnxBackend:
    """An exported world model run by onnxruntime; see the module docstring for the protocol.

    onnx_dir: a `wmfast export` folder (manifest.json + *.onnx; every file's sha256 is checked).
    device: "cpu" or "cuda[:i]"; providers: explicit ORT providers (default: from the device);
    strict: fail instead of warning when nodes fall back to the CPU EP; cuda_graph: capture
    CUDA graphs per input shape (CUDA EP only); threads: onnxruntime's intra-op threads (default on
    the CPU: torch.get_num_threads()); run_dir: also check the export against this run; fused: run
    each graph's onnxruntime-fused form where the export has one (NAME.ort.onnx, see
    fusions.fuse_for_onnxruntime; default on the CPU, where it was measured)."""

    def __init__(self, onnx_dir, device="cpu", providers=None, strict: bool = False, cuda_graph: bool = False,
                 threads: int = None, run_dir=None, audit: bool = None, fused: bool = None):
        self.onnx_dir = onnx_dir
        self.device = torch.device(device)
        self.manifest = read_manifest(onnx_dir)
        if run_dir is not None:
            check_against_run(self.manifest, run_dir, onnx_dir)
        if cuda_graph and self.device.type != "cuda":
            raise WmfastError("cuda_graph=True needs device='cuda'")
        self.providers = resolve_providers(self.device, providers)
        self.strict = strict
        if threads is None and self.device.type == "cpu":
            threads = torch.get_num_threads()   # as many as torch uses (torch.set_num_threads steers both)
        self.threads = threads
        self.fused = self.device.type == "cpu" if fused is None else bool(fused)
        self.graphs = {name: GraphSession(os.path.join(onnx_dir, self._file(g)), g, self.device, self.providers,
                                          strict, threads, cuda_graph)
                       for name, g in self.manifest["graphs"].items()}
        consts = self.manifest.get("constants", {})
        self.mask_token = (torch.tensor(consts["mask_token"], dtype=torch.float32, device=self.device)
                           if "mask_token" in consts else None)
        self.num_actions = consts.get("num_actions")
        self.configs = {stage: info["config"] for stage, info in self.manifest["run"].items()}
        self.placements = {}
        if audit if audit is not None else self.device.type == "cuda":
            self.audit_placement()

    def _file(self, entry: dict) -> str:
        """The graph file to run: its onnxruntime-fused form when asked for and exported."""
        return entry["onnxruntime"]["file"] if self.fused and "onnxruntime" in entry else entry["file"]

    @classmethod
    def for_run(cls, run_dir, device="cpu", export_if_missing: bool = False, **kwargs):
        """The backend for run_dir/onnx. The export must exist and match the run (configs and
        weights), else a WmfastError names `wmfast export`; with export_if_missing (World's
        auto_export=True) a missing or stale export is (re-)exported first, with a note."""
        import sys

        onnx_dir = os.path.join(run_dir, "onnx")
        fix = f"run `wmfast export --run {run_dir}` (or pass auto_export=True)"
        if not os.path.exists(os.path.join(onnx_dir, "manifest.json")):
            if not export_if_missing:
                raise WmfastError(f"{run_dir} has no ONNX export ({onnx_dir}/manifest.json is missing); {fix}")
            reason = "no export yet"
        else:
            try:
                check_against_run(read_manifest(onnx_dir), run_dir, onnx_dir)
                reason = None
            except WmfastError as e:
                if not export_if_missing:
                    raise WmfastError(f"{e} (or pass auto_export=True)") from None
                reason = f"stale export: {e}"
        if reason is not None:
            from wmfast.export.exporter import export_run

            print(f"wmfast: note: exporting {run_dir} to {onnx_dir} ({reason})", file=sys.stderr)
            export_run(run_dir, onnx_dir, check=False)
        return cls(onnx_dir, device=device, run_dir=run_dir, **kwargs)

    def graph(self, name: str) -> GraphSession:
        if name not in self.graphs:
            raise WmfastError(f"{self.onnx_dir} has no {name!r} graph (exported: {sorted(self.graphs)})")
        return self.graphs[name]

    def audit_placement(self) -> dict:
        """Nodes per provider for every graph (one profiled run on example inputs); warns when
        nodes run on the CPU although another provider was asked for."""
        from wmfast.export.graphs import EXAMPLE

        asked = self.providers[0][0] if isinstance(self.providers[0], tuple) else self.providers[0]
        for name, g in self.graphs.items():
            sizes = dict(EXAMPLE, batch=self.manifest["batch"] if isinstance(self.manifest["batch"], int) else 1)
            feeds = [torch.zeros(tuple(resolve_dim(d, sizes) for d in s["shape"]), dtype=TORCH_DTYPES[s["dtype"]])
                     for s in g.inputs]
            counts = g.placement(*feeds)
            self.placements[name] = counts
            fallback = sum(n for p, n in counts.items() if p != asked)
            if fallback:
                warnings.warn(f"onnx backend: {fallback} of {sum(counts.values())} nodes of graph {name} run on "
                              f"{sorted(p for p in counts if p != asked)} instead of {asked}", RuntimeWarning,
                              stacklevel=2)
        return self.placements

    @classmethod
    def for_world(cls, model, device, compile_options=None):
        """The registry's factory for World(backend="onnx"): the run's export (made if missing),
        CUDA graphs on a CUDA device."""
        if not model.path:
            raise WmfastError("backend='onnx' needs a model loaded from a run directory (World.load(path))")
        device = torch.device(device)
        return cls.for_run(model.path, device=str(device), cuda_graph=device.type == "cuda",
                           export_if_missing=bool((compile_options or {}).get("auto_export")))

    # -- the rollout backend protocol --------------------------------------------------------
    def new_cache(self, which: str, batch: int, slots: int) -> KVCache:
        cfg = self.configs["dynamics" if which == "dynamics" else "tokenizer"]
        heads, patches = cfg["num_heads"], (cfg["frame_size"] // cfg["patch_size"]) ** 2
        return KVCache(cfg["num_blocks"], batch, patches, heads, slots, cfg["embed_dim"] // heads, self.device)

    def dynamics_prefill(self, lat, act, cache, pe):
        padded = torch.cat([act.new_zeros(act.shape[0], 1, act.shape[2]), act], 1)        # [B, T, A]
        cache.clear().write(*self.graph("dynamics_prefill")(lat, padded, pe))

    def maskgit_step(self, x, masked, tokens, target, act, cache, pe, min_confidence, noise=None,
                     temperature: float = 1.0):
        args = (x, masked, tokens, target, act, cache.k, cache.v, cache.valid, pe, min_confidence)
        if noise is None:
            return self.graph("maskgit_step")(*args)
        temperature = torch.tensor(temperature, dtype=torch.float32, device=self.device)
        return self.graph("maskgit_step_sampled")(*args, noise, temperature)

    def dynamics_commit(self, lat, act, cache, pe):
        cache.write(*self.graph("dynamics_commit")(lat, act, cache.k, cache.v, cache.valid, pe))

    def decoder_prefill(self, lat, cache, pe):
        cache.clear().write(*self.graph("decoder_prefill")(lat, pe))

    def decoder_extend(self, lat, cache, pe):
        frames, k, v = self.graph("decoder_extend")(lat, cache.k, cache.v, cache.valid, pe)
        cache.write(k, v)
        return frames

    def encode(self, frames):
        return self.graph("tokenizer_encoder")(frames)[0]

    def latents(self, idx):
        return self.graph("token_latents")(idx)[0]

    def lam_encode(self, frames):
        return self.graph("action_encoder")(frames)[0]

    def action_latents(self, ids):
        return self.graph("action_latents")(ids)[0]

    def decode(self, lat):
        return self.graph("tokenizer_decoder")(lat)[0]
