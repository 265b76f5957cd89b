"""The software-engineering family on real packages, real tests and a real bubblewrap sandbox.

Episodes use a test-split instance of the package with the fastest tests (``inflection``: about a second).
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("swebench")

from agentgym_envs.families.swe import (  # noqa: E402
    MANIFEST,
    Sandbox,
    SandboxLimits,
    SandboxUnavailableError,
    SWEEnv,
    load_instances,
)
from agentgym_envs.families.swe import sandbox as sandbox_module  # noqa: E402
from agentgym_envs.families.swe.build import BuildConfig, BuildError, build_package  # noqa: E402
from agentgym_envs.families.swe.tasks import PackageSpec  # noqa: E402

try:
    sandbox_module.check_sandbox()
except SandboxUnavailableError as exc:  # pragma: no cover - machines without bubblewrap
    pytest.skip(str(exc), allow_module_level=True)

INSTANCES = load_instances(MANIFEST)
#: A test-split instance of the package with the fastest tests that has one.
FAST = min(
    (i for i in INSTANCES if i.split == "test"),
    key=lambda i: (["pypi/inflection", "pypi/six", "pypi/cachetools", "pypi/webcolors"] + [i.repo]).index(i.repo),
)


def _env(**kwargs) -> SWEEnv:
    return SWEEnv(split=FAST.split, tasks=[FAST.instance_id], **kwargs)


def _play_expert(env: SWEEnv) -> tuple[float, dict]:
    obs, info = env.reset(seed=0)
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(env.parser.format_command(env.expert_action()))
        if terminated or truncated:
            return reward, info
    raise AssertionError("the expert did not submit")


@pytest.mark.parametrize("actions", ["shell", "tools"])
def test_expert_episode_wins(actions: str) -> None:
    env = _env(actions=actions)
    try:
        reward, info = _play_expert(env)
    finally:
        env.close()
    assert info["won"] and info["resolution"] == "RESOLVED_FULL"
    assert reward == pytest.approx(1.0)  # the dense score goes from 0 to 1 at submit
    assert info["diff"].strip() == FAST.patch.strip()
    assert set(info["tests"]["passed"]) == set(FAST.fail_to_pass) | set(FAST.pass_to_pass)


def test_empty_submit_loses() -> None:
    env = _env()
    try:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step("submit")
    finally:
        env.close()
    assert terminated and info["lost"] and not info["won"]
    assert set(info["tests"]["failed"]) == set(FAST.fail_to_pass)
    assert info["diff"] == ""


def test_edited_tests_do_not_count() -> None:
    env = _env()
    try:
        env.reset(seed=0)
        test_file = FAST.fail_to_pass[0].split("::")[0]
        env.step(
            f"printf 'def test_x():\\n    pass\\n' > {test_file} && echo 'collect_ignore_glob = [\"*\"]' > conftest.py"
        )
        info = env.step("submit")[4]
    finally:
        env.close()
    assert info["lost"]


def test_same_seed_same_task() -> None:
    env = SWEEnv(split="train")
    try:
        first = env.reset(seed=5)
        again = env.reset(seed=5)
        other = env.reset(seed=6)
    finally:
        env.close()
    assert first[1]["task_id"] == again[1]["task_id"] and first[0] == again[0]
    assert len(env.task_ids) > 1 and isinstance(other[1]["task_id"], str)


# ---- containment ----------------------------------------------------------------------------------
@pytest.fixture
def box(tmp_path: Path):
    root = tmp_path / "episode"
    root.mkdir()
    sandbox = Sandbox(root, SandboxLimits(wall_time_s=3, processes=32))
    sandbox.own(root)
    yield sandbox
    _assert_no_process_of(sandbox)


def _assert_no_process_of(sandbox: Sandbox) -> None:
    uid = sandbox.uid if sandbox.uid is not None else None
    deadline = time.monotonic() + 10
    while True:
        left = [p for p in psutil.process_iter(["uids", "cmdline"]) if _belongs(p, sandbox, uid)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == []


def _belongs(process: psutil.Process, sandbox: Sandbox, uid: int | None) -> bool:
    try:
        if uid is not None:
            return process.info["uids"].real == uid
        return str(sandbox.root) in " ".join(process.info["cmdline"] or ())
    except (psutil.Error, TypeError, AttributeError):
        return False


def test_a_command_that_never_ends_is_killed(box: Sandbox) -> None:
    start = time.monotonic()
    result = box.run("sleep 1000 & sleep 1000")
    assert result.stopped == "time_limit" and result.exit_code is None
    assert time.monotonic() - start < 10


def test_a_fork_bomb_is_contained(box: Sandbox) -> None:
    result = box.run(":(){ :|:& };:; sleep 1")
    assert result.stopped in (None, "time_limit", "output_limit")
    assert "Resource temporarily unavailable" in result.output


def test_endless_output_is_cut(box: Sandbox) -> None:
    result = box.run("yes")
    assert result.stopped == "output_limit"
    assert len(result.output) <= box.limits.output_bytes + 65536


def test_there_is_no_network(box: Sandbox) -> None:
    result = box.run("exec 3<>/dev/tcp/1.1.1.1/80 && echo connected")
    assert result.exit_code != 0 and "connected" not in result.output
    interfaces = [line.split(":")[0].strip() for line in box.run("cat /proc/net/dev").output.splitlines()[2:]]
    assert interfaces == ["lo"]  # a network namespace of its own, with only the loopback interface


def test_writes_outside_the_episode_folder_fail(box: Sandbox, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    result = box.run(f"rm -rf {outside}; touch /usr/agentgym-x /etc/agentgym-x; echo ok > inside.txt; cat inside.txt")
    assert (outside / "keep.txt").read_text() == "keep"
    assert not Path("/usr/agentgym-x").exists() and not Path("/etc/agentgym-x").exists()
    assert "ok" in result.output and (box.root / "inside.txt").exists()


def test_other_folders_and_home_are_invisible(box: Sandbox, tmp_path: Path) -> None:
    from agentgym_envs.cache import cache_root

    other = tmp_path / "other-episode"
    other.mkdir()
    (other / "secret.txt").write_text("the answer")
    result = box.run(
        f"cat {other}/secret.txt; ls {cache_root()}/swe/sources; ls {Path.home()}/.bashrc; echo HOME=$HOME"
    )
    assert "the answer" not in result.output
    assert "No such file or directory" in result.output and "inflection" not in result.output
    assert f"HOME={box.root}" in result.output


def test_an_episode_leaves_nothing_behind() -> None:
    env = _env()
    env.reset(seed=0)
    assert env.workspace is not None
    folder = env.workspace.folder
    env.step("sleep 1000 &")
    env.close()
    assert not folder.exists()


def test_without_bubblewrap_the_family_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module, "_CHECKED", {})
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailableError) as raised:
        SWEEnv(split="test")
    assert "\n" not in str(raised.value) and "bubblewrap" in str(raised.value)


# ---- the build ------------------------------------------------------------------------------------
def test_the_build_refuses_a_package_whose_tests_fail(tmp_path: Path) -> None:
    source = tmp_path / "broken-1.0"
    source.mkdir()
    (source / "broken.py").write_text("def double(x):\n    return x * 2\n")
    (source / "test_broken.py").write_text(
        "from broken import double\n\ndef test_ok():\n    assert double(2) == 4\n\ndef test_bad():\n    assert double(3) == 7\n"
    )
    spec = PackageSpec("broken", "1.0", "0" * 64, sources=("broken.py",), tests=("test_broken.py",))
    with pytest.raises(BuildError, match="do not pass before mutation"):
        build_package(spec, BuildConfig(instances_per_package=1, attempts_per_package=1), source=source)


def test_the_build_keeps_a_mutation_that_breaks_a_test(tmp_path: Path) -> None:
    source = tmp_path / "tiny-1.0"
    source.mkdir()
    (source / "tiny.py").write_text("def double(x):\n    return x * 2\n")
    (source / "test_tiny.py").write_text(
        "from tiny import double\n\ndef test_double():\n    assert double(3) == 6\n\ndef test_type():\n    assert callable(double)\n"
    )
    spec = PackageSpec("tiny", "1.0", "0" * 64, sources=("tiny.py",), tests=("test_tiny.py",))
    (instance,) = build_package(spec, BuildConfig(instances_per_package=1, attempts_per_package=3), source=source)
    assert instance.fail_to_pass == ("test_tiny.py::test_double",)
    assert instance.pass_to_pass == ("test_tiny.py::test_type",)
    assert "test_tiny.py::test_double" in instance.problem_statement
    assert instance.patch.startswith("diff --git a/tiny.py b/tiny.py")


def test_the_time_limit_truncates_the_episode() -> None:
    env = _env(time_limit_s=0.0)
    try:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step("ls")
    finally:
        env.close()
    assert truncated and not terminated and info["truncation_reason"] == "time_limit"
