"""One training step (forward, backward, Adam) of lapa-breakout (full width) and lapa-breakout-small on CPU,
batch 32 (the specified batch), one thread: process CPU seconds (robust to a shared machine) and wall seconds."""
import json, platform, resource, sys, time, torch
from wmfast.models.lapa import LapaModel, named_config
torch.manual_seed(0)
name, batch = sys.argv[1], int(sys.argv[2])
m = LapaModel(named_config(name)).train()
opt = torch.optim.Adam(m.parameters(), 3e-4)
x0, x1 = torch.rand(batch, 3, 210, 160), torch.rand(batch, 3, 210, 160)
times = []
for i in range(3):   # the first step warms up allocators
    t, c = time.perf_counter(), time.process_time()
    _, loss, _ = m(x0, x1); opt.zero_grad(); loss.backward(); opt.step()
    times.append((time.perf_counter() - t, time.process_time() - c))
print(json.dumps({"config": name, "params_M": round(sum(p.numel() for p in m.parameters()) / 1e6, 3), "batch": batch,
                  "threads": torch.get_num_threads(), "step_cpu_s": round(min(c for _, c in times[1:]), 2),
                  "step_wall_s": round(min(w for w, _ in times[1:]), 2),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "torch": torch.__version__, "cpu": platform.processor() or platform.machine()}))
