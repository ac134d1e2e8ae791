"""YAML files people write (``--config``, presets): a key given twice is an error, not last-one-wins."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping names the same key twice; ``problem`` says which and on which lines."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a mapping key given twice instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise DuplicateKey(None, None, f"key {key!r} is given twice (lines {first} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse YAML text, refusing duplicate keys (see :class:`UniqueKeyLoader`)."""
    return yaml.load(text, Loader=UniqueKeyLoader)
