"""Blueprints: Flowcraft-shaped, frozen, round-tripping data, and its diagrams."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Iterator

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typing_extensions import Annotated

import flowdsl as fd

# -- module-level nodes (a node's `uses` is its module:qualname) --------------


@fd.node
def fetch() -> list[int]:
    return [1, 2, 3]


@fd.node
def clean(fetch: list[int]) -> list[int]:
    return [x for x in fetch if x > 1]


@fd.node
def report(clean: list[int]) -> str:
    return ",".join(map(str, clean))


@fd.node
def source() -> int:
    return 1


@fd.node
def left(source: int) -> int:
    return source + 1


@fd.node
def right(source: int) -> int:
    return source + 2


@fd.node
def merge(left: int, right: int) -> int:
    return left + right


@fd.node
def numbers() -> list[int]:
    return [1, 2, 3]


@fd.node
def offset() -> int:
    return 10


@fd.batch(input=numbers, output="scaled", concurrency=4, chunk_size=2, on_error="skip")
def scale(item: int, offset: int, factor: int = 2) -> int:
    return item * factor + offset


@fd.node
def summed(scaled: list[int]) -> int:
    return sum(scaled)


@fd.batch(input="numbers")
def plain_batch(item: int) -> int:
    return item


@fd.node
def annotated_from(value: Annotated[list[int], fd.From("fetch")]) -> int:
    return len(value)


# fd.From(...) as a default is the documented way to name a source; bugbear
# cannot know that the marker it returns is immutable.
@fd.node
def default_from(value: list[int] = fd.From(fetch)) -> int:  # noqa: B008
    return sum(value)


@fd.node
def greet(name: str, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


@fd.node(inline=True)
def shout(greet: str, ctx: fd.Context) -> str:
    return greet.upper()


def plain_function(fetch: list[int]) -> int:
    return len(fetch)


def _ref(name: str) -> str:
    return f"{__name__}:{name}"


FLOWS: dict[str, Callable[[], fd.Flow]] = {
    "chain": lambda: fd.Flow("chain", [fetch, clean, report]),
    "diamond": lambda: fd.Flow("diamond", [source, left, right, merge]),
    "batch": lambda: fd.Flow("batch", [numbers, offset, scale, summed]),
    "plain-batch": lambda: fd.Flow("plain-batch", [numbers, plain_batch]),
    "from-wired": lambda: fd.Flow("from-wired", [fetch, annotated_from, default_from]),
    "inputs": lambda: fd.Flow("inputs", [greet, shout]),
    "plain-function": lambda: fd.Flow("plain-function", [fetch, plain_function]),
}


def _edges(bp: fd.Blueprint) -> set[tuple[str, str]]:
    return {(e["source"], e["target"]) for e in bp.to_dict()["edges"]}


def _node(data: dict[str, Any], node_id: str) -> dict[str, Any]:
    (found,) = [n for n in data["nodes"] if n["id"] == node_id]
    return found


class TestShape:
    """to_dict() has the shape of Flowcraft's WorkflowBlueprint."""

    @pytest.mark.parametrize("name", sorted(FLOWS))
    def test_top_level_node_and_edge_fields(self, name: str) -> None:
        data = FLOWS[name]().blueprint.to_dict()

        assert {"id", "nodes", "edges", "metadata"} == set(data)
        assert isinstance(data["nodes"], list)
        assert isinstance(data["edges"], list)
        for n in data["nodes"]:
            assert {"id", "uses"} <= set(n)
            assert set(n) <= {"id", "uses", "params", "inputs", "config"}
        for e in data["edges"]:
            assert {"source", "target"} <= set(e)
            assert set(e) <= {"source", "target", "action", "condition", "transform"}
        assert 1 == data["metadata"]["schema"]

    @pytest.mark.parametrize("name", sorted(FLOWS))
    def test_json_dumps_to_dict(self, name: str) -> None:
        bp = FLOWS[name]().blueprint

        text = json.dumps(bp.to_dict())

        assert bp.to_dict() == json.loads(text)
        assert bp.to_dict() == json.loads(bp.to_json())

    def test_chain(self) -> None:
        data = FLOWS["chain"]().blueprint.to_dict()

        assert "chain" == data["id"]
        assert [
            {"id": "fetch", "uses": _ref("fetch"), "inputs": {}},
            {"id": "clean", "uses": _ref("clean"), "inputs": {"fetch": "fetch"}},
            {"id": "report", "uses": _ref("report"), "inputs": {"clean": "clean"}},
        ] == data["nodes"]
        assert [
            {"source": "fetch", "target": "clean"},
            {"source": "clean", "target": "report"},
        ] == data["edges"]
        assert {"required": [], "optional": []} == data["metadata"]["inputs"]

    def test_diamond_edges(self) -> None:
        bp = FLOWS["diamond"]().blueprint

        assert {
            ("source", "left"),
            ("source", "right"),
            ("left", "merge"),
            ("right", "merge"),
        } == _edges(bp)
        assert {"left": "left", "right": "right"} == dict(bp.node("merge").inputs)

    def test_uses_of_a_nested_function_is_its_qualname(self) -> None:
        @fd.node
        def inner() -> int:
            return 1

        bp = fd.Flow("nested", [inner]).blueprint

        expected = (
            f"{__name__}:TestShape."
            "test_uses_of_a_nested_function_is_its_qualname.<locals>.inner"
        )
        assert expected == bp.node("inner").uses

    def test_plain_function_in_node_list(self) -> None:
        data = FLOWS["plain-function"]().blueprint.to_dict()

        assert {
            "id": "plain_function",
            "uses": _ref("plain_function"),
            "inputs": {"fetch": "fetch"},
        } == _node(data, "plain_function")

    def test_from_wired_inputs_name_the_source(self) -> None:
        bp = FLOWS["from-wired"]().blueprint

        assert {"value": "fetch"} == dict(bp.node("annotated_from").inputs)
        assert {"value": "fetch"} == dict(bp.node("default_from").inputs)
        assert {("fetch", "annotated_from"), ("fetch", "default_from")} == _edges(bp)

    def test_flow_inputs_and_config(self) -> None:
        data = FLOWS["inputs"]().blueprint.to_dict()

        assert {
            "id": "greet",
            "uses": _ref("greet"),
            "inputs": {"name": "name", "punctuation": "punctuation"},
        } == _node(data, "greet")
        # The Context parameter is injected, so it is not wired.
        assert {
            "id": "shout",
            "uses": _ref("shout"),
            "inputs": {"greet": "greet"},
            "config": {"inline": True},
        } == _node(data, "shout")
        assert {"required": ["name"], "optional": ["punctuation"]} == data["metadata"][
            "inputs"
        ]


class TestBatchShape:
    """A batch is a <id>_scatter node and a <id>_gather node, as in Flowcraft."""

    def test_scatter_and_gather_nodes(self) -> None:
        data = FLOWS["batch"]().blueprint.to_dict()

        assert ["numbers", "offset", "scale_scatter", "scale_gather", "summed"] == [
            n["id"] for n in data["nodes"]
        ]
        assert {
            "id": "scale_scatter",
            "uses": "batch-scatter",
            "params": {
                "workerUsesKey": _ref("scale"),
                "inputKey": "numbers",
                "outputKey": "scaled",
                "gatherNodeId": "scale_gather",
                "chunkSize": 2,
                "onError": "skip",
                "concurrency": 4,
                "workerInputs": {"offset": "offset", "factor": "factor"},
            },
            "inputs": "numbers",
        } == _node(data, "scale_scatter")
        gather = _node(data, "scale_gather")
        assert "batch-gather" == gather["uses"]
        assert "scaled" == gather["params"]["outputKey"]
        assert {"required": [], "optional": ["factor"]} == data["metadata"]["inputs"]

    def test_edges_run_through_scatter_and_gather(self) -> None:
        bp = FLOWS["batch"]().blueprint

        assert {
            ("numbers", "scale_scatter"),
            ("offset", "scale_scatter"),
            ("scale_scatter", "scale_gather"),
            ("scale_gather", "summed"),
        } == _edges(bp)
        assert {"scaled": "scaled"} == dict(bp.node("summed").inputs)

    def test_defaults_and_no_concurrency(self) -> None:
        params = FLOWS["plain-batch"]().blueprint.node("plain_batch_scatter").params

        assert {
            "workerUsesKey": _ref("plain_batch"),
            "inputKey": "numbers",
            "outputKey": "plain_batch",
            "gatherNodeId": "plain_batch_gather",
            "chunkSize": 1,
            "onError": "raise",
        } == dict(params)
        assert "concurrency" not in params


class TestRoundTrip:
    """from_dict(to_dict()) and from_json(to_json()) give back an equal blueprint."""

    @pytest.mark.parametrize("name", sorted(FLOWS))
    def test_from_dict(self, name: str) -> None:
        bp = FLOWS[name]().blueprint

        loaded = fd.Blueprint.from_dict(bp.to_dict())

        assert bp == loaded
        assert hash(bp) == hash(loaded)
        assert bp.to_dict() == loaded.to_dict()

    @pytest.mark.parametrize("name", sorted(FLOWS))
    def test_from_json(self, name: str) -> None:
        bp = FLOWS[name]().blueprint

        assert bp == fd.Blueprint.from_json(bp.to_json())
        assert bp == fd.Blueprint.from_json(bp.to_json(indent=None))

    def test_same_flow_built_twice_is_equal(self) -> None:
        assert FLOWS["batch"]().blueprint == FLOWS["batch"]().blueprint

    def test_different_flows_differ(self) -> None:
        assert FLOWS["chain"]().blueprint != FLOWS["diamond"]().blueprint


class TestFrozen:
    """A blueprint is an immutable, hashable value; attrs.evolve edits copies."""

    def test_attributes_cannot_be_assigned(self) -> None:
        bp = FLOWS["batch"]().blueprint

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            bp.id = "other"  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            bp.nodes[0].uses = "x:y"  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            bp.edges[0].target = "x"  # type: ignore[misc]
        assert "batch" == bp.id

    def test_collections_are_read_only(self) -> None:
        bp = FLOWS["batch"]().blueprint
        scatter = bp.node("scale_scatter")

        assert isinstance(bp.nodes, tuple)
        assert isinstance(bp.edges, tuple)
        with pytest.raises(TypeError):
            scatter.params["chunkSize"] = 99  # type: ignore[index]
        with pytest.raises(TypeError):
            scatter.params["workerInputs"]["factor"] = "x"
        with pytest.raises(TypeError):
            bp.node("summed").inputs["scaled"] = "x"  # type: ignore[index]
        with pytest.raises(TypeError):
            bp.metadata["schema"] = 2  # type: ignore[index]
        assert 2 == scatter.params["chunkSize"]

    def test_loaded_blueprint_does_not_share_the_dict(self) -> None:
        data = FLOWS["batch"]().blueprint.to_dict()
        bp = fd.Blueprint.from_dict(data)

        _node(data, "scale_scatter")["params"]["chunkSize"] = 99
        data["metadata"]["inputs"]["optional"].append("late")

        assert 2 == bp.node("scale_scatter").params["chunkSize"]
        assert ("factor",) == bp.metadata["inputs"]["optional"]

    def test_hashable(self) -> None:
        first = FLOWS["diamond"]().blueprint
        second = fd.Blueprint.from_dict(first.to_dict())

        assert 1 == len({first, second})
        assert {first: "x"}[second] == "x"

    def test_evolve(self) -> None:
        bp = FLOWS["chain"]().blueprint

        renamed = attrs.evolve(bp, id="renamed")
        fewer = attrs.evolve(bp, nodes=list(bp.nodes[:2]), edges=list(bp.edges[:1]))

        assert "renamed" == renamed.id
        assert "chain" == bp.id
        assert bp.nodes == renamed.nodes
        assert "renamed" == renamed.to_dict()["id"]
        assert ("fetch", "clean") == tuple(n.id for n in fewer.nodes)
        assert isinstance(fewer.nodes, tuple)
        assert 3 == len(bp.nodes)

    def test_evolve_freezes_new_params(self) -> None:
        spec = FLOWS["chain"]().blueprint.node("fetch")

        changed = attrs.evolve(spec, params={"retries": [1, 2]})

        assert (1, 2) == changed.params["retries"]
        with pytest.raises(TypeError):
            changed.params["retries"] = 3  # type: ignore[index]
        assert {"retries": [1, 2]} == changed.to_dict()["params"]


def _valid() -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [{"id": "a", "uses": "m:a"}, {"id": "b", "uses": "m:b"}],
        "edges": [{"source": "a", "target": "b"}],
        "metadata": {"schema": 1},
    }


def _with(**changes: Any) -> dict[str, Any]:
    data = _valid()
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return data


_DROP = object()


class TestFromDictErrors:
    """from_dict lists every problem in one BlueprintError, never a KeyError."""

    @pytest.mark.parametrize(
        ("data", "names"),
        [
            pytest.param([], ["mapping", "list"], id="list"),
            pytest.param("blueprint", ["mapping", "str"], id="str"),
            pytest.param(None, ["mapping", "NoneType"], id="none"),
            pytest.param(_with(id=_DROP), ["'id'", "None"], id="missing-id"),
            pytest.param(_with(id=7), ["'id'", "7"], id="id-int"),
            pytest.param(_with(id=""), ["'id'", "''"], id="id-empty"),
            pytest.param(
                _with(nodes={"a": "m:a"}, edges=[]),
                ["'nodes'", "list"],
                id="nodes-not-a-list",
            ),
            pytest.param(
                _with(nodes=_DROP, edges=[]), ["'nodes'", "None"], id="nodes-missing"
            ),
            pytest.param(_with(edges=_DROP), ["'edges'", "None"], id="edges-missing"),
            pytest.param(
                _with(nodes=[{"id": "a"}], edges=[]),
                ["nodes[0].uses"],
                id="node-without-uses",
            ),
            pytest.param(
                _with(nodes=[{"uses": "m:a"}], edges=[]),
                ["nodes[0].id"],
                id="node-without-id",
            ),
            pytest.param(
                _with(nodes=["a"], edges=[]), ["nodes[0]", "mapping"], id="node-str"
            ),
            pytest.param(
                _with(nodes=[{"id": "a", "uses": "m:a", "params": [1]}], edges=[]),
                ["nodes[0].params"],
                id="params-not-a-mapping",
            ),
            pytest.param(
                _with(nodes=[{"id": "a", "uses": "m:a", "inputs": {"x": 1}}], edges=[]),
                ["nodes[0].inputs"],
                id="inputs-not-strings",
            ),
            pytest.param(
                _with(edges=[{"source": "a", "target": "ghost"}]),
                ["'a'", "'ghost'"],
                id="edge-to-unknown-node",
            ),
            pytest.param(
                _with(edges=[{"source": "a"}]), ["edges[0].target"], id="edge-no-target"
            ),
            pytest.param(
                _with(edges=[{"source": "a", "target": "b", "action": 3}]),
                ["edges[0].action"],
                id="edge-action-int",
            ),
            pytest.param(
                _with(
                    nodes=[{"id": "a", "uses": "m:a"}, {"id": "a", "uses": "m:b"}],
                    edges=[],
                ),
                ["duplicate", "'a'"],
                id="duplicate-node-ids",
            ),
            pytest.param(
                _with(nodes=[{"id": "a", "uses": "m:a", "colour": "red"}], edges=[]),
                ["nodes[0]", "colour"],
                id="unknown-node-field",
            ),
            pytest.param(
                _with(edges=[{"source": "a", "target": "b", "weight": 2}]),
                ["edges[0]", "weight"],
                id="unknown-edge-field",
            ),
            pytest.param(
                _with(metadata=["schema"]), ["'metadata'"], id="metadata-not-a-mapping"
            ),
        ],
    )
    def test_one_problem(self, data: Any, names: list[str]) -> None:
        with pytest.raises(fd.BlueprintError) as info:
            fd.Blueprint.from_dict(data)

        assert 1 == len(info.value.problems), info.value.problems
        for name in names:
            assert name in info.value.problems[0]
            assert name in str(info.value)

    def test_every_problem_is_listed(self) -> None:
        data = {
            "id": 7,
            "nodes": [{"id": "a"}, {"id": "b", "uses": "m:b", "colour": "red"}],
            "edges": [{"source": "b", "target": "ghost"}, "junk"],
        }

        with pytest.raises(fd.BlueprintError) as info:
            fd.Blueprint.from_dict(data)

        problems = info.value.problems
        assert 5 == len(problems), problems
        expected = [
            "'id'",
            "nodes[0].uses",
            "nodes[1] has unknown fields ['colour']",
            "edges[1] must be a mapping",
            # 'b' failed to load but still names itself: only 'ghost' is unknown.
            "edge 'b' -> 'ghost' names unknown node 'ghost'",
        ]
        for fragment in expected:
            assert 1 == sum(fragment in p for p in problems), (fragment, problems)

    @pytest.mark.parametrize(
        "text", ["{not json", "", "[1, 2]", '"blueprint"'], ids=repr
    )
    def test_from_json(self, text: str) -> None:
        with pytest.raises(fd.BlueprintError) as info:
            fd.Blueprint.from_json(text)

        assert 1 == len(info.value.problems)

    @pytest.mark.parametrize("part", ["node", "edge"])
    def test_non_string_unknown_keys(self, part: str) -> None:
        data = _valid()
        entry = data["nodes"][0] if part == "node" else data["edges"][0]
        entry.update({1: "one", "extra": "two"})

        with pytest.raises(fd.BlueprintError) as info:
            fd.Blueprint.from_dict(data)

        assert 1 == len(info.value.problems)
        assert "extra" in info.value.problems[0]

    def test_unknown_top_level_field(self) -> None:
        with pytest.raises(fd.BlueprintError) as info:
            fd.Blueprint.from_dict(_with(colour="red"))

        assert "colour" in str(info.value)


# -- hypothesis: mutated blueprints load or fail cleanly ----------------------

_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    st.dictionaries(
        st.sampled_from(["id", "uses", "source", "target", "x"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=3)),
        max_size=3,
    ),
)


def _slots(value: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) pair inside `value`, depth first."""
    if isinstance(value, dict):
        items: Any = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return
    for key, child in items:
        yield value, key
        yield from _slots(child)


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    root = {"doc": FLOWS["batch"]().blueprint.to_dict()}
    for _ in range(draw(st.integers(1, 4))):
        slots = list(_slots(root))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        how = draw(st.sampled_from(["drop", "replace", "insert"]))
        target = container[key]
        if how == "drop" and container is not root:
            del container[key]
        elif how == "insert" and isinstance(target, dict):
            target[draw(st.sampled_from(["id", "nodes", "params", "junk"]))] = draw(
                _JUNK
            )
        elif how == "insert" and isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), draw(_JUNK))
        else:
            container[key] = draw(_JUNK)
    return root["doc"]


class TestFromDictFuzz:
    """Whatever a blueprint dict is mutated into, from_dict loads or rejects it."""

    @settings(max_examples=300, deadline=None)
    @given(data=_mutated())
    def test_loads_or_raises_blueprint_error(self, data: Any) -> None:
        before = copy.deepcopy(data)

        outcome: Any
        try:
            outcome = fd.Blueprint.from_dict(data)
        except fd.BlueprintError as err:
            outcome = err

        if isinstance(outcome, fd.BlueprintError):
            assert outcome.problems
            assert all(isinstance(p, str) and p for p in outcome.problems)
        else:
            assert isinstance(outcome, fd.Blueprint)
            assert outcome == fd.Blueprint.from_dict(outcome.to_dict())
        assert before == data  # from_dict never edits its argument


class TestDiagrams:
    """Mermaid and DOT draw a batch as scatter, parallel workers, gather."""

    def test_mermaid_batch(self) -> None:
        text = FLOWS["batch"]().to_mermaid()
        lines = [line.strip() for line in text.splitlines()]

        assert lines[0].startswith("flowchart")
        assert "numbers --> scale_scatter" in lines
        assert "offset --> scale_scatter" in lines
        assert "scale_gather --> summed" in lines
        (opening,) = [i for i, line in enumerate(lines) if line.startswith("subgraph")]
        assert '"Parallel Workers"' in lines[opening]
        closing = lines.index("end", opening)
        workers = lines[opening + 1 : closing]
        assert 1 == len(workers)
        assert '("scale")' in workers[0]
        # The scatter reaches the gather only through its workers.
        assert "scale_scatter --> scale_gather" not in lines

    def test_mermaid_chain(self) -> None:
        lines = FLOWS["chain"]().to_mermaid().splitlines()

        assert "subgraph" not in "\n".join(lines)
        assert "    fetch --> clean" in lines
        assert "    clean --> report" in lines

    def test_dot(self) -> None:
        text = FLOWS["batch"]().to_dot()

        assert text.startswith("digraph")
        assert '"numbers" -> "scale_scatter";' in text
        assert '"scale_gather" -> "summed";' in text
        assert text.rstrip().endswith("}")
