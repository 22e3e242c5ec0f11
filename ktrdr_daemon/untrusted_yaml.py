"""Reading what users drop: untrusted YAML (spec 2: job files are data).

The safe loader only, and a check of the composed tree before anything is constructed, so an
alias bomb or a recursive alias costs one visit per node, not memory.
"""

from __future__ import annotations

from typing import Any

import yaml

from pipeline import safe_yaml

MAX_DROP_BYTES = 1 << 20  # 1 MiB (section 2)
MAX_YAML_NODES = 100_000  # values after alias expansion: stops "billion laughs"
MAX_YAML_DEPTH = 64


class JobFileError(ValueError):
    """A dropped file is not an acceptable job. The message names the file, key and allowed."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source, self.errors = source, list(errors)
        if len(errors) == 1:
            super().__init__(f"{source}: {errors[0]}")
        else:
            super().__init__(f"{source}: {len(errors)} errors\n  " + "\n  ".join(errors))


_Loader = safe_yaml.LOADER


def _check_expansion(root: yaml.Node) -> None:
    """Refuse alias bombs and recursive aliases before constructing anything.

    The composer shares an aliased node; counting the tree as if aliases were expanded (memoised,
    iteratively) costs one visit per node however large the expansion would be.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    while stack:
        node, depth, done = stack.pop()
        if done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children(node))
            if sizes[id(node)] > MAX_YAML_NODES:
                raise ValueError(
                    f"aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?); "
                    "write the values out or use fewer aliases"
                )
            continue
        if id(node) in sizes:
            continue
        if depth > MAX_YAML_DEPTH:
            raise ValueError(f"nested deeper than {MAX_YAML_DEPTH} levels")
        on_path.add(id(node))
        stack.append((node, depth, True))
        for child in children(node):
            if id(child) in on_path:
                raise ValueError("an alias refers to its own parent (a recursive structure)")
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))


def load_job_mapping(data: bytes, source: str) -> dict[str, Any]:
    """Parse a dropped file into a mapping, or raise :class:`JobFileError` saying what is wrong."""
    if len(data) > MAX_DROP_BYTES:
        raise JobFileError(source, [f"is over {MAX_DROP_BYTES // 1024} KiB; a job file is small"])
    if not data.strip():
        raise JobFileError(source, ["is empty; expected a mapping such as 'strategy: x.yaml'"])
    if b"\x00" in data:
        raise JobFileError(source, ["is binary (NUL bytes); expected a YAML text file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JobFileError(source, [f"is not UTF-8 text (byte {error.start})"]) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        doc = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise JobFileError(source, [f"is not valid YAML: {problem}{where}"]) from None
    except (ValueError, RecursionError) as error:
        message = str(error) if isinstance(error, ValueError) else "nested too deeply"
        raise JobFileError(source, [f"is refused: {message}"]) from None
    finally:
        loader.dispose()
    if not isinstance(doc, dict):
        kind = "nothing" if doc is None else type(doc).__name__
        raise JobFileError(source, [f"holds {kind}; expected a mapping of keys to values"])
    return doc
