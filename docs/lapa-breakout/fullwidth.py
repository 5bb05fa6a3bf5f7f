"""One training step (forward, backward, Adam) of a LAPA config at a batch size, on CPU (one thread:
process CPU seconds, robust to a shared machine, and wall seconds) or CUDA (wall seconds after
synchronize, fp32 and bf16 autocast, peak allocated memory).

    python fullwidth.py lapa-breakout 32 [cpu|cuda]"""
import json, platform, resource, sys, time, torch
from wmfast.models.lapa import LapaModel, named_config
torch.manual_seed(0)
name, batch = sys.argv[1], int(sys.argv[2])
device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
m = LapaModel(named_config(name)).to(device).train()
opt = torch.optim.Adam(m.parameters(), 3e-4)
x0, x1 = (torch.rand(batch, 3, 210, 160, device=device) for _ in range(2))


def sync():
    if device == "cuda":
        torch.cuda.synchronize()


def steps(n, autocast_dtype=None):
    times = []
    for _ in range(n):   # the first steps warm up allocators / cuDNN autotuning
        sync()
        t, c = time.perf_counter(), time.process_time()
        with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            _, loss, _ = m(x0, x1)
        opt.zero_grad(); loss.backward(); opt.step()
        sync()
        times.append((time.perf_counter() - t, time.process_time() - c))
    return times[max(1, n // 3):]


out = {"config": name, "params_M": round(sum(p.numel() for p in m.parameters()) / 1e6, 3), "batch": batch,
       "device": device, "torch": torch.__version__}
if device == "cuda":
    out["gpu"] = torch.cuda.get_device_name()
    for label, dt in (("fp32", None), ("bf16_autocast", torch.bfloat16)):
        torch.cuda.reset_peak_memory_stats()
        t = sorted(w for w, _ in steps(12, dt))
        out[label] = {"step_ms_median": round(1000 * t[len(t) // 2], 2), "step_ms_min": round(1000 * t[0], 2),
                      "peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2 ** 20)}
else:
    times = steps(3)
    out.update(threads=torch.get_num_threads(), step_cpu_s=round(min(c for _, c in times), 2),
               step_wall_s=round(min(w for w, _ in times), 2),
               peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               cpu=platform.processor() or platform.machine())
print(json.dumps(out))
