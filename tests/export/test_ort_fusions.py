"""The onnxruntime rewrites of export/fusions.py on small hand-made graphs: a count of booleans
moves to float32 only where that is exact, and gives the same integers (numpy counts them)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from wmfast.export.fusions import FLOAT_EXACT_COUNT, fuse_for_onnxruntime


def count_graph(path, dims):
    """x bool [2, *dims] -> Cast int64 -> ReduceSum over the last axis (as torch exports bool.sum(-1))."""
    nodes = [helper.make_node("Cast", ["x"], ["as_int"], to=TensorProto.INT64),
             helper.make_node("ReduceSum", ["as_int", "axes"], ["count"], keepdims=0)]
    graph = helper.make_graph(nodes, "count", [helper.make_tensor_value_info("x", TensorProto.BOOL, [2, *dims])],
                              [helper.make_tensor_value_info("count", TensorProto.INT64, [2] + list(dims[:-1]))],
                              [helper.make_tensor("axes", TensorProto.INT64, [1], [-1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    return path


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("dims", [[300], [3, 257]])
def test_a_static_bool_count_reduces_in_float_with_the_same_integers(tmp_path, dims):
    src = count_graph(str(tmp_path / "count.onnx"), dims)
    entry = fuse_for_onnxruntime(src, str(tmp_path / "count.ort.onnx"))
    assert entry is not None and entry["fusions"]["bool_counts_in_float"] == 1
    assert entry["ops"].get("Cast") == 2                                     # bool -> float, then float -> int64
    x = np.random.default_rng(0).random((2, *dims)) < 0.5
    got = run(tmp_path / "count.ort.onnx", x)
    assert got.dtype == np.int64 and np.array_equal(got, x.sum(-1)) and np.array_equal(got, run(src, x))


def test_a_count_over_a_symbolic_or_huge_axis_stays_int64(tmp_path):
    assert fuse_for_onnxruntime(count_graph(str(tmp_path / "a.onnx"), ["n"]), str(tmp_path / "a.ort.onnx")) is None
    huge = count_graph(str(tmp_path / "b.onnx"), [FLOAT_EXACT_COUNT + 1])   # float32 would round such counts
    assert fuse_for_onnxruntime(huge, str(tmp_path / "b.ort.onnx")) is None
