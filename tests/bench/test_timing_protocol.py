"""The GPU timing protocol's pieces, on the CPU (wall-time fallback) and as arithmetic."""
import torch

from wmfast.bench.protocol import device_ms, floor_ms, tf32_matmul


def test_floor_is_the_larger_of_arithmetic_and_memory_time():
    # 1 TFLOP at 100 TFLOP/s = 10 ms; 1 GB at 1000 GB/s = 1 ms
    assert abs(floor_ms(1e12, 1e9, 100, 1000) - 10.0) < 1e-9
    assert abs(floor_ms(1e9, 1e10, 100, 1000) - 10.0) < 1e-9


def test_device_ms_reports_a_median_and_a_p90_that_track_the_work():
    small = device_ms(lambda: torch.randn(64, 64) @ torch.randn(64, 64))
    big = device_ms(lambda: torch.randn(700, 700) @ torch.randn(700, 700))
    assert 0 < small["median_ms"] <= small["p90_ms"]
    assert big["median_ms"] > small["median_ms"]


def test_tf32_switch_restores_the_setting():
    before = torch.backends.cuda.matmul.allow_tf32
    with tf32_matmul(not before):
        assert torch.backends.cuda.matmul.allow_tf32 == (not before)
    assert torch.backends.cuda.matmul.allow_tf32 == before
