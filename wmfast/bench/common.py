"""Shared helpers for `wmfast bench ...`: timing, machine facts, JSON output (in wmfast.measure,
which the engine uses too; re-exported here for the benchmarks)."""
from wmfast.measure import (machine_info, print_table, summarize, time_fn, time_interleaved,  # noqa: F401
                            write_json)
