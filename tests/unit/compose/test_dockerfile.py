"""``compose/Dockerfile`` installs only from the hash-pinned lock and runs unprivileged."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

import pytest

from tests.unit.compose.conftest import COMPOSE_DIR, DOCKERFILE, REPO

BASE_IMAGE = "python:3.11-slim-bookworm"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuations joined; comment lines (also inside them) dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            found.append([])
        assert found, "an instruction comes before the first FROM"
        found[-1].append(instruction)
    return found


def test_parse_joins_continuations_and_drops_comments() -> None:
    parsed = parse("FROM a AS b\n# c\nRUN x \\\n  # inside\n  && y\n")
    assert parsed == [Instruction("FROM", "a AS b"), Instruction("RUN", "x && y")]


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def _runs(instructions: list[Instruction]) -> list[str]:
    return [i.arguments for i in instructions if i.keyword == "RUN"]


def test_multi_stage_on_python_slim_bookworm(instructions: list[Instruction]) -> None:
    froms = [i.arguments.split() for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2
    assert froms[0] == [BASE_IMAGE, "AS", "builder"]
    assert all(words[0] == BASE_IMAGE for words in froms)


def test_uv_comes_from_the_hash_pinned_bootstrap(instructions: list[Instruction]) -> None:
    commands = [shlex.split(run) for run in _runs(instructions)]
    assert any(
        "--require-hashes" in words and "requirements/bootstrap.txt" in words for words in commands
    )


def test_every_pip_install_requires_hashes(instructions: list[Instruction]) -> None:
    for run in _runs(instructions):
        for command in run.split("&&"):
            words = shlex.split(command)
            if "pip" in words and "install" in words:
                assert "--require-hashes" in words, command


def test_every_uv_sync_is_frozen_and_without_dev(instructions: list[Instruction]) -> None:
    syncs = [
        shlex.split(command)
        for run in _runs(instructions)
        for command in run.split("&&")
        if command.split()[:2] == ["uv", "sync"]
    ]
    assert syncs
    for words in syncs:
        assert "--frozen" in words, words
        assert "--no-dev" in words, words
    assert not any("uv pip install" in run or "uv add" in run for run in _runs(instructions))


def test_llama_cpp_is_built_in_the_builder(instructions: list[Instruction]) -> None:
    builder = stages(instructions)[0]
    installs = " ".join(_runs(builder))
    assert "build-essential" in installs
    assert "cmake" in installs
    env = " ".join(i.arguments for i in builder if i.keyword == "ENV")
    assert "-DLLAVA_BUILD=OFF" in env


def test_copied_paths_exist_and_pass_the_dockerignore(instructions: list[Instruction]) -> None:
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources: list[str] = []
    for instruction in instructions:
        if instruction.keyword == "COPY" and "--from=" not in instruction.arguments:
            sources += instruction.arguments.split()[:-1]
    for source in sources:
        assert (REPO / source).exists(), source
        assert source.rstrip("/") in included, f"{source} is excluded from the build context"
    for required in ("requirements/bootstrap.txt", "uv.lock", "pyproject.toml", "src/"):
        assert required in sources
    assert "policies/" in sources


def test_final_stage_runs_tiermesh_as_a_non_root_user(instructions: list[Instruction]) -> None:
    final = stages(instructions)[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    entrypoints = [i.arguments for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoints
    assert json.loads(entrypoints[-1]) == ["tiermesh"]
    keywords = [i.keyword for i in final]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "RUN" not in keywords[keywords.index("USER") :], "nothing runs after dropping root"
