"""Loading checkpoints from other projects: tinyworlds runs (tinyworlds.py) and the
restricted unpickler that reads their pickles without running their code (safe_pickle.py)."""
from wmfast.compat.safe_pickle import Record, safe_load  # noqa: F401
from wmfast.compat.tinyworlds import import_tinyworlds, is_tinyworlds_path, load_tinyworlds  # noqa: F401
