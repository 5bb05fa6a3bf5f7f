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
    "onnx>=1.16",
    "onnxscript>=0.2",
    "onnxruntime>=1.18",
]
EXTRAS = {
    # onnxruntime-gpu replaces the CPU onnxruntime (they cannot be installed side by side).
    "gpu": ["onnxruntime-gpu>=1.18"],
    "atari": ["ale-py>=0.9", "gymnasium>=1.0"],
    "bench": ["faiss-cpu>=1.8"],
    "test": [
        "pytest>=8",
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
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_modules()

setup(
    name="wmfast",
    version="0.1.0",
    description="Fast training, rollout and export for small latent-action video world models",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"wmfast": ["assets/*/*/*/*", "assets/*/*/*", "assets/*/*", "assets/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["wmfast=wmfast.cli:main"]},
)
