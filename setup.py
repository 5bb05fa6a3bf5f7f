"""wmfast: fast latent-action video world models (tokenizer, latent actions, MaskGIT dynamics).

The C++ extension `wmfast._C` is built from csrc/ when torch is importable at build time
(`pip install --no-build-isolation .`); without it the package still works on the
pure-PyTorch reference paths.
"""
import glob
import os

from setuptools import setup

PACKAGES = [
    "wmfast", "wmfast.ops", "wmfast.nn", "wmfast.models", "wmfast.data", "wmfast.train",
    "wmfast.rollout", "wmfast.compat", "wmfast.bench", "wmfast.kernels", "wmfast.export",
    "wmfast.viz", "wmfast.policy", "wmfast.lapa",
    "wmfast.serve", "wmfast.cli", "wmfast.eval",
]
# kernels/ and export/ live at the top level of the repo but install inside wmfast:
# PyPI already has packages called `kernels` and `export`.
PACKAGE_DIR = {"wmfast.kernels": "kernels", "wmfast.export": "export"}

INSTALL_REQUIRES = [
    # The exact pin takes the local CPU build on CPU machines and the matching CUDA build
    # (with the triton it pins itself) from PyPI for GPU users.
    "torch==2.13.0",
    "numpy>=1.24",
    "safetensors>=0.4",
    "h5py>=3.8",
    "imageio>=2.31",
    "imageio-ffmpeg>=0.4",
    "pillow>=9",
    "tqdm>=4.65",
    "matplotlib>=3.7",
    "torchmetrics>=1.0",      # SSIM (wmfast.lapa.evaluate)
    "scikit-learn>=1.3",      # t-SNE of code vectors (wmfast.lapa.evaluate)
    "onnx>=1.16",
    "onnxscript>=0.2",
    "onnxruntime>=1.18",
    # wmfast serve: ASGI app, server, websocket protocol
    "starlette>=0.37",
    "uvicorn>=0.35",         # websockets-sansio
    "websockets>=12",
]
EXTRAS = {
    # onnxruntime-gpu replaces the CPU onnxruntime (they cannot be installed side by side).
    "gpu": ["onnxruntime-gpu>=1.18"],
    "atari": ["ale-py>=0.9", "gymnasium>=1.0"],
    "bench": ["faiss-cpu>=1.8"],
    "test": [
        "pytest>=8",
        "hypothesis>=6.100",   # property-based fuzzing of config loading and shape checks
        "playwright>=1.40",   # drives the system chromium (apt) in tests/serve; no browser download
        # The Triton interpreter runs our kernels on CPU tensors in the tests; CUDA torch
        # already brings its own pinned triton, which satisfies this unpinned requirement.
        "triton>=3.2; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "ale-py>=0.9",
        "gymnasium>=1.0",
    ],
}


def extension_modules():
    if os.environ.get("WMFAST_NO_EXTENSION") == "1":
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("wmfast: torch is not importable at build time; building without the C++ extension")
        return [], {}
    sources = sorted(glob.glob("csrc/*.cpp"))
    if not sources:
        return [], {}
    ext = CppExtension(
        "wmfast._C",
        sources,
        extra_compile_args={"cxx": ["-O3", "-std=c++17", "-fopenmp"]},
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": recording_build_ext(BuildExtension.with_options(use_ninja=True))}


def recording_build_ext(base):
    """build_ext that writes wmfast/_build_info.json beside the compiled _C: the torch it was built
    against (wmfast.ops refuses to load the extension under another torch: the C++ ABI differs)."""
    import json

    import torch

    class RecordingBuildExt(base):
        def run(self):
            super().run()
            for ext in self.extensions:
                folder = os.path.dirname(self.get_ext_fullpath(ext.name))
                with open(os.path.join(folder, "_build_info.json"), "w") as f:
                    json.dump({"torch": torch.__version__, "extension": ext.name}, f)

    return RecordingBuildExt


ext_modules, cmdclass = extension_modules()

setup(
    name="wmfast",
    version="0.1.0",
    description="Fast training, rollout and export for small latent-action video world models",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"wmfast": ["assets/*/*/*/*", "assets/*/*/*", "assets/*/*", "assets/*", "_build_info.json"],
                  "wmfast.serve": ["static/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["wmfast=wmfast.cli:main"]},
)
