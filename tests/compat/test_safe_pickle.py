"""The restricted unpickler: plain data and tensors read back exactly (torch's weights_only
loader is the reference); foreign classes become inert records; anything that would run code is
refused before it runs (a marker file that the payload would create must not exist)."""
import collections
import dataclasses
import functools
import io
import os
import pickle
import subprocess
import sys
import types
import zipfile

import pytest
import torch

from wmfast.compat.safe_pickle import ForeignGlobal, Record, safe_load
from wmfast.errors import WmfastError



def sample_data():
    base = torch.arange(24, dtype=torch.float32).view(4, 6)
    return {
        "strided": base[:, 1:4],                      # non-contiguous view
        "same_storage": base,
        "dtypes": [torch.randn(3, dtype=d) for d in (torch.float16, torch.bfloat16, torch.float64)] +
                  [torch.tensor([1, -2], dtype=torch.int64), torch.tensor([True, False])],
        "empty": torch.zeros(0, 5),
        "scalar": torch.tensor(3.5),
        "param": torch.nn.Parameter(torch.randn(2, 2)),
        "ordered": collections.OrderedDict(b=1, a=[1.5, None, "x"]),
        "plain": (1, 2.5, "s", b"\x00\xff", None, True, {3, 4}, frozenset({5}), 2 ** 70, 1 + 2j),
        "device": torch.device("cpu"),
        "dtype": torch.float16,
    }


def assert_same(got, want):
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want)
    elif isinstance(want, dict):
        assert type(got) is type(want) and list(got) == list(want)
        for k in want:
            assert_same(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    else:
        assert got == want


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_round_trip_matches_weights_only(tmp_path, legacy):
    path = tmp_path / "data.pt"
    torch.save(sample_data(), path, _use_new_zipfile_serialization=not legacy)
    got = safe_load(path)
    with torch.serialization.safe_globals([frozenset, complex]):
        assert_same(got, torch.load(path, weights_only=True))
    # Views keep sharing their storage, as with torch.load.
    assert got["strided"].untyped_storage().data_ptr() == got["same_storage"].untyped_storage().data_ptr()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_pickles_every_protocol(tmp_path, protocol):
    data = {"k": [1, 2, (3, b"\x00\xff")], "o": collections.OrderedDict(a=1), "s": {1}, "f": -0.25}
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert safe_load(path) == data


# -- foreign classes -----------------------------------------------------------------------------

@dataclasses.dataclass
class FakeMixedPrecision:
    param_dtype: str = "bfloat16"
    cast_forward_inputs: bool = True


@dataclasses.dataclass
class FakeDistributed:
    use_ddp: bool = False
    mixed: FakeMixedPrecision = dataclasses.field(default_factory=FakeMixedPrecision)


class Trap:
    """A class whose unpickling hooks would leave a marker file if they ever ran."""

    marker = None

    def __init__(self):
        self.x = 1

    def __setstate__(self, state):
        open(self.marker, "w").close()


@pytest.fixture
def foreign_module(monkeypatch):
    """Register the classes above under a module name that does not exist once pickled."""
    module = types.ModuleType("twfake.config")
    for cls in (FakeMixedPrecision, FakeDistributed, Trap):
        monkeypatch.setattr(cls, "__module__", "twfake.config")
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "twfake", types.ModuleType("twfake"))
    monkeypatch.setitem(sys.modules, "twfake.config", module)
    return monkeypatch


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_foreign_dataclasses_become_records(tmp_path, foreign_module, protocol):
    path = tmp_path / "state.pt"
    torch.save({"config": {"embed_dim": 24, "distributed": FakeDistributed(use_ddp=True)}, "step": 7}, path,
               pickle_protocol=protocol)
    foreign_module.delitem(sys.modules, "twfake.config")      # loading must not need (or import) it
    foreign_module.delitem(sys.modules, "twfake")
    state = safe_load(path)
    rec = state["config"]["distributed"]
    assert isinstance(rec, Record) and rec.class_name == "twfake.config.FakeDistributed"
    assert rec == {"use_ddp": True, "mixed": {"param_dtype": "bfloat16", "cast_forward_inputs": True}}
    assert rec.mixed.class_name == "twfake.config.FakeMixedPrecision" and rec.mixed.param_dtype == "bfloat16"
    assert state["step"] == 7 and "twfake.config" not in sys.modules


def test_setstate_of_a_foreign_class_never_runs(tmp_path, foreign_module):
    foreign_module.setattr(Trap, "marker", str(tmp_path / "setstate-ran"))
    path = tmp_path / "trap.pkl"
    path.write_bytes(pickle.dumps({"t": Trap()}, protocol=2))
    rec = safe_load(path)["t"]
    assert not (tmp_path / "setstate-ran").exists()
    assert isinstance(rec, Record) and rec.class_name == "twfake.config.Trap" and rec["x"] == 1


def test_a_referenced_function_stays_inert(tmp_path):
    path = tmp_path / "ref.pkl"
    path.write_bytes(pickle.dumps({"fn": os.path.join}, protocol=2))
    fn = safe_load(path)["fn"]
    assert isinstance(fn, ForeignGlobal) and fn.qualname == "posixpath.join"
    with pytest.raises(WmfastError, match="refusing to call posixpath.join"):
        fn("a", "b")


# -- hostile pickles -----------------------------------------------------------------------------

class Payload:
    def __init__(self, reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def hostile_payloads(marker):
    touch = f"touch {marker}"
    return {
        "os.system": (os.system, (touch,)),
        "builtins.eval": (eval, (f"open({marker!r}, 'w')",)),
        "builtins.exec": (exec, (f"open({marker!r}, 'w')",)),
        "subprocess.Popen": (subprocess.Popen, (["touch", marker],)),
        "functools.partial": (functools.partial(os.system, touch), ()),
        "getattr": (getattr, ("os", "system")),
        "foreign class call": (collections.Counter, ("abc",)),
        "reconstructor on a function": (__import__("copyreg")._reconstructor, (Payload, os.system, None)),
    }


@pytest.mark.parametrize("name", list(hostile_payloads("x")))
@pytest.mark.parametrize("container", ["pickle", "torch.save"])
def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path, name, container):
    marker = tmp_path / "pwned"
    payload = {"config": {"a": 1}, "evil": Payload(hostile_payloads(str(marker))[name])}
    path = tmp_path / "state.pt"
    if container == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(WmfastError, match="refusing") as err:
        safe_load(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_reduce_on_a_foreign_dataclass_is_refused(tmp_path, foreign_module):
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps(Payload((FakeDistributed, (True,))), protocol=2))
    with pytest.raises(WmfastError, match="refusing to call twfake.config.FakeDistributed"):
        safe_load(path)


@pytest.mark.parametrize("raw, what", [
    (b"(S'touch pwned'\nios\nsystem\n.", "INST"),
    (b"(cos\nsystem\nS'touch pwned'\no.", "OBJ"),
    (b"\x80\x02cbuiltins\ndict\n)\x81.", "instantiate builtins.dict"),
    (b"\x80\x02cbuiltins\nlist\n)\x81}b.", "instantiate builtins.list"),
    (b"\x80\x02cposix\nsystem\n)\x81.", "instantiate posix.system"),
    (b"\x80\x02ctorch.nn\nLinear\n)\x81.", "instantiate torch.nn.Linear"),
    (b"\x80\x02ctorch\nfloat32\n]\x85R.", "call torch.float32"),
])
def test_hand_made_opcodes_are_refused(tmp_path, raw, what, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "raw.pkl"
    path.write_bytes(raw)
    with pytest.raises(WmfastError, match="refusing"):
        safe_load(path)
    assert not (tmp_path / "pwned").exists(), what


def test_tensor_reading_past_its_storage_is_refused(tmp_path):
    t = torch.arange(4.0)
    storage = torch.storage.TypedStorage(wrap_storage=t.untyped_storage(), dtype=t.dtype, _internal=True)
    evil = Payload((torch._utils._rebuild_tensor_v2, (storage, 0, (1000,), (1,), False, collections.OrderedDict())))
    torch.save({"w": evil}, tmp_path / "evil.pt")
    with pytest.raises(WmfastError, match="past its storage"):
        safe_load(tmp_path / "evil.pt")


# -- damaged files --------------------------------------------------------------------------------

def test_damaged_files_give_one_line_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.randn(64, 64)}, good)
    cases = {
        "random.pt": os.urandom(256),
        "truncated.pt": good.read_bytes()[: good.stat().st_size // 2],
        "empty.pt": b"",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/version", "3")
    cases["no_data_pkl.pt"] = buf.getvalue()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "short_storage.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:10] if "/data/" in info.filename and info.filename[-1].isdigit() else data)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for name in list(cases) + ["short_storage.pt", "missing.pt"]:
        with pytest.raises(WmfastError) as err:
            safe_load(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value), name
