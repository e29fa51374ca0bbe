"""The docs cannot drift: the init-args reference is the data modules' fields, and every relative link resolves."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(
    [ROOT / "README.md", *DOCS.glob("*.md"), ROOT / "midtrain_configs/README.md", ROOT / "training_scripts/README.md"]
)


def load_generator():
    spec = importlib.util.spec_from_file_location("init_args_reference", ROOT / "util_scripts/init_args_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()


def documented_rows(class_name: str) -> dict[str, list[str]]:
    """name -> [type, default, meaning] of each row of the class's table in docs/reference.md."""
    text = (DOCS / "reference.md").read_text()
    heading = f"### `sharded_mix.{class_name}`"
    assert heading in text, f"docs/reference.md has no section {heading!r}"
    rows = {}
    for line in text.split(heading, 1)[1].lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        name = re.fullmatch(r"`([^`]+)`", cells[0])
        if name:
            assert name.group(1) not in rows, f"{name.group(1)} is documented twice"
            rows[name.group(1)] = cells[1:]
    return rows


@pytest.mark.parametrize("cls", GENERATOR.data_modules(), ids=lambda cls: cls.__name__)
def test_the_reference_documents_exactly_the_init_fields_with_their_defaults(cls):
    fields = GENERATOR.init_fields(cls)
    rows = documented_rows(cls.__name__)
    names = [field.name for field in fields]
    assert not set(names) - set(rows), f"init args missing from docs/reference.md: {sorted(set(names) - set(rows))}"
    assert not set(rows) - set(names), f"docs/reference.md documents stale names: {sorted(set(rows) - set(names))}"
    assert list(rows) == names  # in the order of the code
    for field in fields:
        default = GENERATOR.render_default(GENERATOR.default_value(field))
        assert rows[field.name][1] == default, f"{cls.__name__}.{field.name}: the code's default is {default}"


@pytest.mark.parametrize("cls", GENERATOR.data_modules(), ids=lambda cls: cls.__name__)
def test_every_init_field_has_a_docstring(cls):
    """jsonargparse prints it for --data.help, and the reference takes its meaning from it."""
    sources = GENERATOR.field_sources(cls)
    undocumented = [field.name for field in GENERATOR.init_fields(cls) if not sources.get(field.name, ("", ""))[1]]
    assert not undocumented, f"{cls.__name__}: write a docstring under {undocumented}"


def test_the_reference_tables_are_the_generated_ones():
    text = (DOCS / "reference.md").read_text()
    assert GENERATOR.with_generated(text, GENERATOR.generated()) == text, (
        "docs/reference.md is stale; run: python util_scripts/init_args_reference.py --write"
    )


def test_the_generator_notices_a_new_field_and_a_changed_default():
    @dataclasses.dataclass
    class Changed:
        data_path: str = "elsewhere/"
        """Where."""
        brand_new: int = 3
        """New."""

    rows = GENERATOR.table(Changed).splitlines()[2:]
    assert rows == ["| `data_path` | `str` | `elsewhere/` | Where. |", "| `brand_new` | `int` | `3` | New. |"]


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for match in re.finditer(r"^#{1,6} +(.+?) *#*$", without_code_blocks(page.read_text()), flags=re.M):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", without_code_blocks(page.read_text()))
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]  # not http://, mailto:, ...


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_docs_index_links_every_page():
    linked = {link.partition("#")[0] for link in relative_links(DOCS / "README.md")}
    pages = {page.name for page in DOCS.glob("*.md") if page.name != "README.md"}
    assert not pages - linked, f"docs/README.md does not link {sorted(pages - linked)}"


def test_the_readme_stays_short_and_says_what_the_two_commands_do():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200, "README.md is over 200 lines; move the detail into docs/"
    for must in ("bash util_scripts/run_demo.sh", "bash util_scripts/run_tests.sh", "slurm-wlm", "munge", "apt-get"):
        assert must in text, must
    assert "docs/README.md" in text
