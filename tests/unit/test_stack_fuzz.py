"""Random documents only ever give validation errors, never a traceback."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft.errors import InvalidInput
from liferaft.stack import load_stack
from liferaft.stack.loader import parse_stack

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml").read_text()

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30))
keys = st.sampled_from(["version", "name", "providers", "sites", "primary", "alternates", "services", "data", "dns",
                        "objectives", "type", "hosts", "compute", "objects", "zone", "records", "x"])
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(keys, inner, max_size=5)), max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_structures(doc: object) -> None:
    import json

    try:
        parse_stack(Path("fuzz.yaml"), json.dumps(doc))
    except InvalidInput:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(EXAMPLE) - 1), st.text(max_size=8))
def test_mutated_example(pos: int, insert: str) -> None:
    text = EXAMPLE[:pos] + insert + EXAMPLE[pos + 1:]
    try:
        parse_stack(Path("fuzz.yaml"), text)
    except InvalidInput:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_bytes(tmp_path_factory: object, data: bytes) -> None:  # type: ignore[no-untyped-def]
    path = Path("/tmp") / "liferaft-fuzz.yaml"
    path.write_bytes(data)
    try:
        load_stack(path)
    except InvalidInput:
        pass
