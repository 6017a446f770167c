"""Fuzzing user-facing input: configs built from the real RunConfig schema (valid and broken values, unknown
keys, wrong types, extreme numbers, random ``--set`` overrides) and truncated / mutated IDX and CIFAR files.

The contract: ``build_config`` returns a RunConfig or raises a ConfigError naming a field; the dataset readers
return data or raise DataError. Nothing else may escape. Runs are derandomized so the suite is repeatable.
"""

from __future__ import annotations

import ast
import gzip
import re
import struct
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from edgelearn.config import apply_overrides
from edgelearn.data.cifar import batch_arrays, read_cifar_batch, write_cifar_batch
from edgelearn.data.idx import read_idx, write_idx
from edgelearn.errors import ConfigError, DataError
from edgelearn.run_config import RunConfig, build_config

CONFIG_EXAMPLES = 2000
FILE_EXAMPLES = 300
JUNK_ONE_IN = 8
"""A field present in a generated config holds junk (any type) one time in this many."""
FUZZ = settings(
    max_examples=CONFIG_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FILE_FUZZ = settings(FUZZ, max_examples=FILE_EXAMPLES)


# ---------------------------------------------------------------------------------------------- values

EXTREME_NUMBERS = [0, -1, 1, 2, 0.5, 1.0, -0.0, 1e-320, 1e308, -1e308, 2**31, 2**63, 10**400, 1e-12, 0.999999]
EXTREME_FLOATS = [float("inf"), float("-inf"), float("nan")]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EXTREME_NUMBERS + EXTREME_FLOATS),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.dates(),
    st.sampled_from(["auto", "fedavg", "hierfavg", "mlp", "1e3", "", "none", "null", "[1, 2]"]),
)
hashable_keys = st.one_of(st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none(), st.floats(0, 2))
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(hashable_keys, inner, max_size=4),
    ),
    max_leaves=5,
)
numbers = st.one_of(
    st.integers(-3, 200), st.floats(-10, 1e4), st.sampled_from(EXTREME_NUMBERS + EXTREME_FLOATS)
)


def mostly(fitting: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``fitting``, except one time in JUNK_ONE_IN ``rare``."""
    return st.integers(0, JUNK_ONE_IN - 1).flatmap(lambda i: rare if i == 0 else fitting)


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] (constraints are not mirrored: the numbers strategy covers both sides)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def value_for(annotation: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that mostly fit ``annotation`` (near-valid and boundary), mixed with wrong types."""
    annotation = _unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fitting = section(annotation, depth + 1)
    elif annotation is typing.Any:
        fitting = junk
    elif origin is typing.Literal:
        fitting = st.sampled_from(args)
    elif origin in (typing.Union, types.UnionType):
        fitting = st.one_of([value_for(a, depth) for a in args])
    elif origin is list:
        fitting = st.lists(value_for(args[0], depth + 1), max_size=3)
    elif origin is tuple:
        items = args[:1] if len(args) == 2 and args[1] is Ellipsis else args
        fitting = st.lists(value_for(items[0], depth + 1), min_size=0, max_size=4) | st.tuples(
            *(value_for(a, depth + 1) for a in items)
        ).map(list)
    elif origin is dict:
        fitting = st.dictionaries(st.text(max_size=8) | hashable_keys, junk, max_size=4)
    elif annotation is type(None):
        fitting = st.none()
    elif annotation is bool:
        fitting = st.booleans()
    elif annotation in (int, float):
        fitting = numbers
    elif annotation is str:
        fitting = st.text(max_size=16) | st.sampled_from(["edge0", "dev1", "digits", "x.yaml"])
    else:  # pragma: no cover - a new annotation kind: fuzz it with junk only
        fitting = junk
    return mostly(fitting, junk)


def section(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy[Any]:
    """A dict for ``model``: each field present or not, plus sometimes unknown keys."""
    if depth > 4:
        return st.just({})
    optional = {
        name: st.deferred(lambda f=field: value_for(f.annotation, depth))
        for name, field in model.model_fields.items()
    }
    known = st.fixed_dictionaries({}, optional=optional)
    unknown = st.dictionaries(st.text(min_size=1, max_size=8) | hashable_keys, junk, max_size=2)
    return st.builds(lambda a, b, extra: {**a, **b} if extra else a, known, unknown, st.booleans())


def algorithm_section() -> st.SearchStrategy[Any]:
    """The discriminated algorithm union: one member's fields with its name, none, or a wrong name."""
    members = typing.get_args(RunConfig.model_fields["algorithm"].annotation)
    tagged = [
        st.builds(lambda d, tag=m.model_fields["name"].default: {**d, "name": tag}, section(m))
        for m in members
    ]
    return st.one_of(
        *tagged, section(members[0]), st.builds(lambda d, n: {**d, "name": n}, section(members[1]), junk)
    )


def _paths(model: type[BaseModel], prefix: str = "", depth: int = 0) -> list[str]:
    """Every dotted key path of the schema (what ``--set`` overrides target)."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        inner = _unwrap(field.annotation)
        candidates = [inner, *typing.get_args(inner)]
        for c in candidates:
            c = _unwrap(c)
            if isinstance(c, type) and issubclass(c, BaseModel) and depth < 3:
                out.extend(_paths(c, f"{path}.", depth + 1))
    return out


SCHEMA_PATHS = sorted(set(_paths(RunConfig)))
YAML_SCALARS = "1 0 -1 1e400 .inf -.inf .nan true null ~ [1,2] [] {} {a:1} 2020-01-01 12:30:00 0x1F 1_000"
YAML_ODDITIES = "fedavg hierfavg two_stage fedagg [unclosed {x:[ 'quoted &a *a"
YAML_VALUES = [*YAML_SCALARS.split(), *YAML_ODDITIES.split(), "!!python/int 1", "- a", ": x", "'", "\t"]
override_strings = mostly(
    st.builds(
        lambda path, value: f"{path}={value}",
        mostly(st.sampled_from(SCHEMA_PATHS), st.text(max_size=12)),
        mostly(st.sampled_from(YAML_VALUES), st.text(max_size=12)),
    ),
    st.text(max_size=20)
    | st.sampled_from(["=1", ".=1", "a..b=2", "algorithm=fedavg", "topology.devices", "..=", "seed.x=1"]),
)
run_configs = st.builds(
    lambda base, algo, use_algo: {**base, "algorithm": algo} if use_algo else base,
    section(RunConfig),
    algorithm_section(),
    st.booleans(),
)
BACKTICKED = re.compile(r"`([^`]+)`")
LITERAL_KEY = re.compile(r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
"""A key path quoted as a Python string literal (config.loading.quote_key: a key holding a backtick)."""
INDEX = re.compile(r"\[(-?\d+)\]")


def _resolves(path: str, data: Any) -> bool:
    """Whether dotted ``path`` (with ``[i]`` indices) leads into ``data``: every part but the last must
    exist, the last may be missing (a required key or item the input lacks). Keys are
    matched as whole strings, so a key holding a dot (a fuzzed ``0.0``) still matches."""
    if path in ("", "<top level>"):
        return True
    index = INDEX.match(path)
    if index and isinstance(data, list | tuple):
        i, rest = int(index.group(1)), path[index.end() :].removeprefix(".")
        if not -len(data) <= i < len(data):
            return not rest  # a missing item of a too-short list or pair
        return _resolves(rest, data[i])
    if not isinstance(data, dict):
        return False
    for key, value in data.items():
        name = str(key) if not index else index.group(0)  # pydantic shows a non-string key k as [k]
        if path == name or (path.startswith(name) and path[len(name)] in ".["):
            if index and key != int(index.group(1)):
                continue
            if _resolves(path[len(name) :].removeprefix("."), value):
                return True
    return "." not in path and "[" not in path  # a missing (required) key of a present section


def names_offender(message: str, data: Any, overrides: list[str]) -> bool:
    """Whether a ConfigError message names what is wrong: an override it could not apply (quoted), or for
    each listed problem a backticked key path that exists in the input (or whose parent does)."""
    if any(repr(o) in message for o in overrides):
        return True
    lines = message.split("\n  - ")[1:] or [message]  # one problem per item (keys may hold newlines)

    def paths(line: str) -> list[str]:
        literal = [ast.literal_eval(q) for q in LITERAL_KEY.findall(line) if "`" in q]
        return [*BACKTICKED.findall(line), *literal]

    return all(any(_resolves(p, data) for p in paths(line)) for line in lines)


def test_config_fuzz_never_raises_anything_but_a_field_naming_config_error() -> None:
    outcomes = {"accepted": 0, "rejected": 0}

    @FUZZ
    @given(data=mostly(run_configs, junk), overrides=st.lists(override_strings, max_size=3))
    def check(data: Any, overrides: list[str]) -> None:
        data = data if isinstance(data, dict) else {"seed": data}
        try:
            cfg = build_config(data, overrides)
        except ConfigError as exc:
            outcomes["rejected"] += 1
            try:
                merged = apply_overrides(data, overrides)
            except ConfigError:
                merged = data  # the override itself is bad: its text must be quoted in the message
            assert names_offender(exc.message, merged, overrides), exc.message
        else:
            outcomes["accepted"] += 1
            assert isinstance(cfg, RunConfig)

    check()
    assert outcomes["accepted"] + outcomes["rejected"] >= CONFIG_EXAMPLES
    assert outcomes["accepted"] >= CONFIG_EXAMPLES // 40 and outcomes["rejected"] >= CONFIG_EXAMPLES // 2


# ---------------------------------------------------------------------------------------------- files


def _mutate(valid: bytes, cut: int | None, flips: list[tuple[int, int]], tail: bytes) -> bytes:
    data = bytearray(valid if cut is None else valid[: cut % (len(valid) + 1)])
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    return bytes(data) + tail


# (truncate at, byte overwrites, appended tail); positions near either end (negative = from the end) hit
# the headers and pickle opcodes, which a uniform position would mostly miss among the pixel bytes.
mutations = st.tuples(
    st.none() | st.integers(0, 10_000),
    st.lists(st.tuples(st.integers(-150, 150) | st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.binary(max_size=8),
)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def test_idx_reader_fuzz_raises_only_data_error(workdir: Path) -> None:
    plain = workdir / "valid-idx3-ubyte"
    write_idx(plain, np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    valid = plain.read_bytes()
    target = workdir / "fuzzed"

    @FILE_FUZZ
    @given(
        mutation=mutations,
        gzipped=st.booleans(),
        ndim=st.sampled_from([None, 1, 3]),
        raw=st.binary(max_size=40),
    )
    def check(mutation: tuple[Any, Any, bytes], gzipped: bool, ndim: int | None, raw: bytes) -> None:
        for payload in (_mutate(valid, *mutation), raw):
            if gzipped:
                payload = _mutate(gzip.compress(payload, mtime=0), mutation[0], [], b"")
            target.write_bytes(payload)
            try:
                arr = read_idx(target, expected_ndim=ndim)
            except DataError:
                continue
            assert arr.dtype == np.uint8 and 1 <= arr.ndim <= 3

    check()


def test_cifar_reader_fuzz_raises_only_data_error(workdir: Path) -> None:
    plain = workdir / "data_batch_1"
    write_cifar_batch(plain, np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251, [3, 7])
    valid = plain.read_bytes()
    target = workdir / "fuzzed_batch"

    @FILE_FUZZ
    @given(mutation=mutations, raw=st.binary(max_size=60))
    def check(mutation: tuple[Any, Any, bytes], raw: bytes) -> None:
        for payload in (_mutate(valid, *mutation), raw):
            target.write_bytes(payload)
            try:
                batch = read_cifar_batch(target)
                data, labels = batch_arrays(batch, target, "labels", 10)
            except DataError:
                continue
            assert data.dtype == np.uint8 and data.shape[1] == 3072 and labels.shape == (data.shape[0],)

    check()


def test_fuzz_inputs_include_the_untouched_valid_files(workdir: Path) -> None:
    """The mutation helper keeps a valid file valid when asked for no change (so the fuzzers start valid)."""
    plain = workdir / "ok-idx1-ubyte"
    write_idx(plain, np.array([1, 2, 3], dtype=np.uint8))
    target = workdir / "same"
    target.write_bytes(_mutate(plain.read_bytes(), None, [], b""))
    assert read_idx(target).tolist() == [1, 2, 3]
    batch = workdir / "batch"
    write_cifar_batch(batch, np.zeros((1, 3072), dtype=np.uint8), [4])
    target.write_bytes(_mutate(batch.read_bytes(), None, [], b""))
    assert batch_arrays(read_cifar_batch(target), target, "labels", 10)[1].tolist() == [4]


# ---------------------------------------------------------------------------------------------- regressions
# Inputs the CIFAR fuzzer turned up (before the fix, the first one drove the C unpickler to fill all memory
# and get the process OOM-killed; the dtype-flag and bytearray ones made numpy misbehave after loading).


def _load(workdir: Path, payload: bytes) -> dict[str, Any]:
    target = workdir / "regression"
    target.write_bytes(payload)
    return read_cifar_batch(target)


def test_huge_memo_index_needs_no_memory(workdir: Path) -> None:
    # PROTO 2, EMPTY_DICT, LONG_BINPUT 2**31 - 1, STOP: a dict memo stores one entry, an array one 2**32
    assert _load(workdir, b"\x80\x02}r" + struct.pack("<I", 2**31 - 1) + b".") == {}


def test_dtype_state_with_other_flags_is_refused(workdir: Path) -> None:
    write_cifar_batch(workdir / "ok", np.zeros((1, 3072), dtype=np.uint8), [1])
    valid = (workdir / "ok").read_bytes()
    state_tail = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"  # elsize -1, alignment -1, flags 0, TUPLE
    assert valid.count(state_tail) == 1
    with pytest.raises(DataError, match="unexpected state for dtype"):
        _load(workdir, valid.replace(state_tail, state_tail.replace(b"K\x00", b"K\x01")))


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x80\x05\x96" + struct.pack("<Q", 3) + b"abc.", "buffers are not allowed"),  # BYTEARRAY8
        (b"\x80\x02cnumpy\nndarray\nK\x05\x85R.", "first argument of _reconstruct"),  # ndarray(5)
        (b"\x80\x02cnumpy\ndtype\nX\x01\x00\x00\x00O\x85R.", "not allowed"),  # dtype('O')
        (
            b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nKd\x85X\x01\x00\x00\x00b\x87R.",
            "only",
        ),
    ],
)
def test_disallowed_numpy_constructs_are_data_errors(workdir: Path, payload: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match):
        _load(workdir, payload)
