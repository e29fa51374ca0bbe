"""The demo's text: three kinds of real documents from the running interpreter's standard library.

* ``main`` - the Python reference documentation (``pydoc_data.topics``), one document per topic;
* ``code`` - the stdlib's ``.py`` sources, one document per file;
* ``web``  - prose: module/class/function docstrings (``ast``) and licence texts.

Everything here is deterministic (sorted walks, hashes of document ids), so every build of the demo
(``demo.build_demo``) holds the same documents and the same train/val split. No network is used.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

KINDS = ("main", "code", "web")
EXCLUDED_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "pydoc_data", "__pycache__"})
LICENCE_SUFFIXES = frozenset({"", ".txt", ".md", ".rst"})
MAX_CHARS_PER_KIND = 1_500_000  # keeps the demo well under a minute on two cores
MAX_DOC_CHARS = 100_000  # no single document dwarfs a chunk
MIN_DOCSTRING_CHARS = 200
MIN_MAIN_CHARS = 100_000  # below this, module docstrings move from web to main
VAL_FRACTION = 0.05


@dataclass(frozen=True)
class Document:
    """One document: its kind, a stable id (for sorting and splitting) and its text."""

    kind: str
    source: str
    text: str


# ----------------------------------------------------------------------------- collecting text


def stdlib_dir() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def walk_stdlib(root: Path) -> tuple[list[Path], list[Path]]:
    """Sorted stdlib `.py` sources and licence files, skipping tests, idlelib, site-packages and pydoc_data."""
    sources: list[Path] = []
    licences: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for name in filenames:
            path = Path(dirpath) / name
            if name.endswith(".py") and not name.startswith("_sysconfigdata"):
                sources.append(path)
            elif _is_licence_name(name):
                licences.append(path)
    key = lambda path: path.relative_to(root).as_posix()  # noqa: E731
    return sorted(sources, key=key), sorted(licences, key=key)


def _is_licence_name(name: str) -> bool:
    upper = name.upper()
    return ("LICENSE" in upper or upper.startswith("COPYING")) and Path(name).suffix.lower() in LICENCE_SUFFIXES


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        logger.debug("skipping %s: %s", path, err)
        return None


def collect_code(root: Path, sources: Sequence[Path]) -> list[Document]:
    """One document per stdlib source file (files over MAX_DOC_CHARS are left out)."""
    docs = []
    for path in sources:
        text = _read(path)
        if text and text.strip() and len(text) <= MAX_DOC_CHARS:
            docs.append(Document("code", path.relative_to(root).as_posix(), text))
    return docs


def iter_docstrings(source: str) -> Iterator[tuple[str, int, str]]:
    """(node type, line, docstring) for the module, classes and functions of Python `source`."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=True)
            if docstring:
                yield type(node).__name__, getattr(node, "lineno", 0), docstring


def collect_docstrings(root: Path, sources: Sequence[Path], min_chars: int = MIN_DOCSTRING_CHARS) -> list[Document]:
    """One document per distinct docstring of at least `min_chars` characters."""
    seen: set[str] = set()
    docs = []
    for path in sources:
        source = _read(path)
        if not source:
            continue
        relative = path.relative_to(root).as_posix()
        for node_type, line, docstring in iter_docstrings(source):
            if len(docstring) >= min_chars and docstring not in seen:
                seen.add(docstring)
                docs.append(Document("web", f"{relative}:{line:06d}:{node_type}", docstring))
    return docs


def collect_licences(root: Path, licence_files: Sequence[Path]) -> list[Document]:
    """One document per licence text in the stdlib directory."""
    docs = []
    for path in licence_files:
        text = _read(path)
        if text and text.strip():
            docs.append(Document("web", f"licence:{path.relative_to(root).as_posix()}", text))
    return docs


def collect_reference_docs() -> list[Document]:
    """One document per topic of the Python reference documentation bundled as `pydoc_data.topics`."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        logger.warning("pydoc_data is missing from this Python; the main kind falls back to module docstrings")
        return []
    return [Document("main", f"topic:{name}", text) for name, text in sorted(topics.items()) if text.strip()]


def collect_documents(root: Path | None = None, max_chars: int = MAX_CHARS_PER_KIND) -> dict[str, list[Document]]:
    """The demo documents per kind: deterministic, each kind capped at about `max_chars` characters."""
    root = root or stdlib_dir()
    sources, licence_files = walk_stdlib(root)
    docs = {
        "main": collect_reference_docs(),
        "code": collect_code(root, sources),
        "web": collect_licences(root, licence_files) + collect_docstrings(root, sources),
    }
    docs = _rebalance(docs)
    for kind in KINDS:
        if not docs[kind]:
            raise ValueError(f"found no {kind!r} documents under {root}; the demo needs a full Python stdlib")
    return {kind: cap_documents(docs[kind], max_chars) for kind in KINDS}


def _rebalance(docs: dict[str, list[Document]]) -> dict[str, list[Document]]:
    """Move module docstrings from web to main when the reference docs are tiny or missing."""
    if sum(len(doc.text) for doc in docs["main"]) >= MIN_MAIN_CHARS:
        return docs
    is_module = lambda doc: doc.source.endswith(":Module")  # noqa: E731
    moved = [Document("main", doc.source, doc.text) for doc in docs["web"] if is_module(doc)]
    logger.info("reference docs are small; adding %d module docstrings to the main kind", len(moved))
    return {**docs, "main": docs["main"] + moved, "web": [doc for doc in docs["web"] if not is_module(doc)]}


def _stable_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cap_documents(docs: Sequence[Document], max_chars: int) -> list[Document]:
    """A deterministic, spread-out subset of at most `max_chars` characters, sorted by source."""
    kept: list[Document] = []
    total = 0
    for doc in sorted(docs, key=lambda d: _stable_hash(f"cap:{d.source}")):
        if total + len(doc.text) <= max_chars:
            kept.append(doc)
            total += len(doc.text)
    return sorted(kept, key=lambda d: d.source)


def split_train_val(
    docs: Sequence[Document], val_fraction: float = VAL_FRACTION
) -> tuple[list[Document], list[Document]]:
    """Hold out deterministic documents holding ~`val_fraction` of the text (at least one, never all).

    Documents are drawn in a fixed pseudo-random order (a hash of their source); one larger than the
    whole target is passed over, so the held-out text is several documents, not one huge one.
    """
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to split off validation, got {len(docs)}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction {val_fraction} must be between 0 and 1 (exclusive)")
    target = val_fraction * sum(len(doc.text) for doc in docs)
    ordered = sorted(docs, key=lambda d: _stable_hash(f"val:{d.source}"))
    held_out: set[str] = set()
    held_chars = 0
    for doc in ordered[:-1]:
        if held_chars >= target:
            break
        if len(doc.text) <= target:
            held_out.add(doc.source)
            held_chars += len(doc.text)
    held_out = held_out or {ordered[0].source}
    return [d for d in docs if d.source not in held_out], [d for d in docs if d.source in held_out]
