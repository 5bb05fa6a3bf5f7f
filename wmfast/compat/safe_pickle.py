"""Read pickles from other projects without running their code.

`safe_load(path)` reads a `torch.save` file (zip archive with data.pkl, or the legacy
non-zip format) or a plain pickle, and builds plain data only: dict, list, tuple, set, str,
bytes, numbers, None, collections.OrderedDict and CPU tensors. Nothing is ever imported:

- an instance of a class from another project (say tinyworlds' `utils.config.DistributedConfig`)
  becomes a `Record`, a dict of the fields the pickle stores, with the class name beside them;
  classes of the standard library, torch and numpy never become records;
- any other global (a function, a class referenced but not instantiated) becomes an inert
  `ForeignGlobal` that cannot be called;
- calling anything outside a short allowlist (REDUCE on os.system, builtins.eval,
  subprocess.Popen, functools.partial, a foreign class, ...), old-style INST/OBJ
  instantiation, and BUILD on anything but a Record (or the `_metadata` a state dict's
  OrderedDict carries) are refused with a one-line WmfastError.

torch's own weights_only loader could not do this: it can only admit a foreign class by
importing it and then runs its __setstate__; here the class is never looked up at all.

It runs on the pure-Python unpickler with its opcode handlers replaced, so every opcode that
could call code goes through a check here. Tensors are rebuilt from the raw storage bytes by
this module, never by torch's own rebuild functions with attacker-chosen arguments.
"""
import _compat_pickle
import collections
import io
import os
import pickle
import struct
import sys
import zipfile

import torch

from wmfast.errors import WmfastError

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C   # first pickle of a legacy (non-zip) torch.save file
TORCH_LEGACY_PROTOCOL = 1001


class Record(dict):
    """An instance of a class that was never imported: its fields as dict entries.

    `record.class_name` is the pickled class ('utils.config.DistributedConfig'); fields read
    as keys or attributes. `args` holds constructor arguments from the pickle (usually empty),
    `state` any non-dict state it stored."""

    def __init__(self, class_name: str, args=()):
        super().__init__()
        self.class_name, self.args, self.state = class_name, tuple(args), None

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{self.class_name} record has no field {name!r}") from None

    def __repr__(self):
        return f"Record({self.class_name}, {dict.__repr__(self)})"


class ForeignGlobal:
    """A global the pickle names but that was not imported (module.name); inert."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __call__(self, *args, **kwargs):
        raise WmfastError(f"refusing to call {self.qualname}")

    def __repr__(self):
        return f"<foreign global {self.qualname}>"


class LoadedStorage:
    """Raw bytes read from the file and the dtype its persistent id names."""

    def __init__(self, data: bytes, dtype):
        self.dtype = dtype
        # frombuffer keeps the (writable, private) bytearray alive for as long as the storage lives.
        self.untyped = torch.frombuffer(bytearray(data), dtype=torch.uint8).untyped_storage() if data \
            else torch.UntypedStorage(0)

    def numel(self) -> int:
        return self.untyped.nbytes() // torch._utils._element_size(self.dtype)


# torch.<Name>Storage -> dtype, for the storage types persistent ids name.
STORAGE_TYPES = {
    "UntypedStorage": torch.uint8, "ByteStorage": torch.uint8, "CharStorage": torch.int8,
    "ShortStorage": torch.int16, "IntStorage": torch.int32, "LongStorage": torch.int64,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16, "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "BoolStorage": torch.bool,
}


# Classes from these packages never become records: a pickle instantiating one of them is not
# plain data from a training project's config, so it is refused.
NOT_RECORDS = frozenset(sys.stdlib_module_names) | {"torch", "numpy"}


def _is_project_class(obj) -> bool:
    return isinstance(obj, ForeignGlobal) and obj.module.split(".")[0] not in NOT_RECORDS


class StorageType:
    """A torch storage class named in a persistent id (torch.FloatStorage, ...): only its dtype."""

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_TYPES[name]


DTYPES = {name: getattr(torch, name) for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype)}


# -- the calls a pickle may make ---------------------------------------------------------------

def _codecs_encode(text, encoding="utf-8"):
    # Protocol 2 pickles bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise WmfastError("refusing _codecs.encode with arguments other than (str, 'latin1')")
    return text.encode(encoding)


def _reconstructor(cls, base, state):
    # Protocols 0 and 1 pickle objects as copyreg._reconstructor(cls, object, None).
    if not _is_project_class(cls) or base not in (object, dict):
        raise WmfastError(f"refusing copyreg._reconstructor for {_describe(cls)} on {_describe(base)}")
    record = Record(cls.qualname)
    if base is dict and state:
        record.update(state)
    return record


def _check_size(values, what: str):
    if not isinstance(values, (tuple, list, torch.Size)) or not all(type(v) is int for v in values):
        raise WmfastError(f"tensor {what} must be a tuple of ints, got {values!r}")
    return tuple(values)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)
    -> a plain tensor viewing `storage`; requires_grad and hooks are dropped."""
    if not isinstance(storage, LoadedStorage) or type(offset) is not int:
        raise WmfastError("refusing a tensor rebuild whose storage was not loaded from this file")
    size, stride = _check_size(size, "size"), _check_size(stride, "stride")
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise WmfastError(f"bad tensor layout: size {size}, stride {stride}, offset {offset}")
    needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    if needed > storage.numel():
        raise WmfastError(f"tensor of size {size} reads past its storage of {storage.numel()} elements")
    return torch.empty(0, dtype=storage.dtype).set_(storage.untyped, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, torch.Tensor):
        raise WmfastError("refusing a parameter rebuild from something other than a tensor")
    return data


ALLOWED_CALLS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "device"): torch.device,
    ("torch", "Size"): torch.Size,
}
# Globals that may appear as values (never called): `object`/`dict` for _reconstructor.
ALLOWED_VALUES = {("builtins", "object"): object, ("builtins", "dict"): dict}
CALLABLE = set(map(id, ALLOWED_CALLS.values()))


def _describe(obj) -> str:
    if isinstance(obj, ForeignGlobal):
        return obj.qualname
    for (module, name), value in {**ALLOWED_CALLS, **ALLOWED_VALUES}.items():
        if value is obj:
            return f"{module}.{name}"
    return type(obj).__name__


# -- the unpickler ------------------------------------------------------------------------------

class RestrictedUnpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler with every code-running opcode checked (see module doc).

    `storages` maps a persistent id to a storage; None refuses persistent ids."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, storages=None):
        super().__init__(file, encoding="latin1")
        self._storages = storages

    def find_class(self, module, name):
        if self.proto < 3:    # Python 2 names, mapped from tables (nothing imported)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in ALLOWED_CALLS:
            return ALLOWED_CALLS[key]
        if key in ALLOWED_VALUES:
            return ALLOWED_VALUES[key]
        if module == "torch" and name in STORAGE_TYPES:
            return StorageType(name)
        if module == "torch" and name in DTYPES:
            return DTYPES[name]
        return ForeignGlobal(module, name)

    def persistent_load(self, pid):
        if self._storages is None:
            raise WmfastError(f"unexpected persistent id {pid!r} in a plain pickle")
        return self._storages(pid)

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in CALLABLE:
            raise WmfastError(f"refusing to call {_describe(func)} (only plain data may be unpickled)")
        if not isinstance(args, tuple):
            raise WmfastError(f"REDUCE arguments must be a tuple, got {type(args).__name__}")
        self.stack[-1] = func(*args)

    def _new_record(self, cls, args, kwargs=None):
        if not _is_project_class(cls):
            raise WmfastError(f"refusing to instantiate {_describe(cls)} (only plain data and project "
                              f"config classes may be unpickled)")
        record = Record(cls.qualname, args)
        if kwargs:
            record.update(kwargs)
        self.append(record)

    def load_newobj(self):
        args = self.stack.pop()
        self._new_record(self.stack.pop(), args)

    def load_newobj_ex(self):
        kwargs, args = self.stack.pop(), self.stack.pop()
        self._new_record(self.stack.pop(), args, kwargs)

    def load_inst(self):
        raise WmfastError("refusing INST (old-style class instantiation calls the class)")

    def load_obj(self):
        raise WmfastError("refusing OBJ (old-style class instantiation calls the class)")

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, Record):
            # A state dict's OrderedDict carries `_metadata` as an instance attribute.
            if type(inst) is collections.OrderedDict and isinstance(state, dict) and all(type(k) is str for k in state):
                inst.__dict__.update(state)
                return
            raise WmfastError(f"refusing BUILD (__setstate__) on {_describe(inst)}")
        slots = None
        if isinstance(state, tuple) and len(state) == 2 and (state[1] is None or isinstance(state[1], dict)):
            state, slots = state
        if isinstance(state, dict):
            inst.update(state)
        elif state is not None:
            inst.state = state
        inst.update(slots or {})

    def load_append(self):
        value = self.stack.pop()
        self._list(self.stack[-1]).append(value)

    def load_appends(self):
        items = self.pop_mark()
        self._list(self.stack[-1]).extend(items)

    def load_setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        self._dict(self.stack[-1])[key] = value

    def load_setitems(self):
        items = self.pop_mark()
        target = self._dict(self.stack[-1])
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise WmfastError(f"refusing ADDITEMS on {_describe(target)}")
        target.update(items)

    @staticmethod
    def _list(obj):
        if type(obj) is not list:
            raise WmfastError(f"refusing APPEND on {_describe(obj)}")
        return obj

    @staticmethod
    def _dict(obj):
        if type(obj) not in (dict, collections.OrderedDict, Record):
            raise WmfastError(f"refusing SETITEM on {_describe(obj)}")
        return obj

    for _op, _fn in ((pickle.REDUCE, load_reduce), (pickle.NEWOBJ, load_newobj), (pickle.NEWOBJ_EX, load_newobj_ex),
                     (pickle.INST, load_inst), (pickle.OBJ, load_obj), (pickle.BUILD, load_build),
                     (pickle.APPEND, load_append), (pickle.APPENDS, load_appends),
                     (pickle.SETITEM, load_setitem), (pickle.SETITEMS, load_setitems),
                     (pickle.ADDITEMS, load_additems)):
        dispatch[_op[0]] = _fn
    del _op, _fn


# -- torch.save files ---------------------------------------------------------------------------

def _storage_pid(pid, legacy: bool):
    """('storage', storage type, key, location, numel[, view metadata]) -> (dtype, key, numel)."""
    if not isinstance(pid, tuple) or len(pid) != (6 if legacy else 5) or pid[0] not in ("storage", b"storage"):
        raise WmfastError(f"unexpected persistent id {pid!r}")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, StorageType):
        raise WmfastError(f"unexpected storage type {_describe(storage_type)}")
    if type(key) is bytes:
        key = key.decode("ascii")
    if type(key) is not str or type(numel) is not int or numel < 0:
        raise WmfastError(f"bad storage record {pid!r}")
    if legacy and pid[5] is not None:
        raise WmfastError("legacy storage views are not supported; re-save the file with a current torch")
    return storage_type.dtype, key, numel


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise WmfastError(f"{path}: a torch zip file holds one data.pkl, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and archive.read(prefix + "byteorder") != b"little":
            raise WmfastError(f"{path}: big-endian torch files are not supported")
        loaded = {}

        def storages(pid):
            dtype, key, numel = _storage_pid(pid, legacy=False)
            if key not in loaded:
                data = archive.read(f"{prefix}data/{key}")
                nbytes = numel * torch._utils._element_size(dtype)
                if len(data) != nbytes:
                    raise WmfastError(f"storage {key} has {len(data)} bytes, expected {nbytes}")
                loaded[key] = LoadedStorage(data, dtype)
            return loaded[key]

        return RestrictedUnpickler(io.BytesIO(archive.read(pkl[0])), storages).load()


def _load_stream(path):
    """A plain pickle, or a legacy torch.save file (several pickles, then raw storage bytes)."""
    with open(path, "rb") as f:
        first = RestrictedUnpickler(f).load()
        if type(first) is not int or first != TORCH_LEGACY_MAGIC:
            return first
        if RestrictedUnpickler(f).load() != TORCH_LEGACY_PROTOCOL:
            raise WmfastError(f"{path}: unsupported legacy torch protocol")
        sys_info = RestrictedUnpickler(f).load()
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise WmfastError(f"{path}: big-endian torch files are not supported")
        pending = {}
        file_size = os.fstat(f.fileno()).st_size

        def storages(pid):
            dtype, key, numel = _storage_pid(pid, legacy=True)
            if numel * torch._utils._element_size(dtype) > file_size:
                raise WmfastError(f"storage {key} claims {numel} elements, more than the file holds")
            if key not in pending:
                pending[key] = LoadedStorage(bytes(numel * torch._utils._element_size(dtype)), dtype)
            return pending[key]

        result = RestrictedUnpickler(f, storages).load()
        keys = RestrictedUnpickler(f).load()
        if not isinstance(keys, list) or set(keys) != set(pending):
            raise WmfastError(f"{path}: storage table does not match the pickled tensors")
        for key in keys:
            storage = pending[key]
            numel, = struct.unpack("<q", f.read(8))
            nbytes = storage.untyped.nbytes()
            data = f.read(nbytes)
            if numel != storage.numel() or len(data) != nbytes:
                raise WmfastError(f"{path}: storage {key} is truncated or has the wrong size")
            if nbytes:
                target = torch.empty(0, dtype=torch.uint8).set_(storage.untyped)
                target.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        return result


def safe_load(path):
    """Plain data from a torch.save file or a pickle, never running code from it (see module doc)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WmfastError(f"missing file: {path}")
    try:
        return _load_zip(path) if zipfile.is_zipfile(path) else _load_stream(path)
    except WmfastError as e:
        raise WmfastError(f"{path}: {e}" if not str(e).startswith(path) else str(e)) from None
    except Exception as e:  # any other failure is a malformed file: nothing foreign ever ran
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WmfastError(f"corrupt or unreadable pickle {path}: {detail}") from None
