"""A full disk during the demo fetch and a GGUF import: one line that says how much space is
needed and where, and nothing half-written. Uses a real small tmpfs where the test may mount one."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.gguf_files import Q, write_llama_gguf


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of the asked size (bytes); skipped where mounting is not allowed."""
    mounts: list[Path] = []

    def make(size: int) -> Path:
        if sys.platform != "linux" or os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root on Linux")
        point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(point)
        return point

    yield make
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OPTIQ_HOME": str(home), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "optiq_tui", *args], capture_output=True, text=True,
                          env=environment, timeout=300)


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def no_models_left(home: Path) -> None:
    models = home / "models"
    assert not models.exists() or list(models.iterdir()) == []
    staging = home / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_import_refused_when_the_disk_is_too_small(small_disk, tiny_llama_dir, tmp_path):
    gguf = tmp_path / "t.gguf"
    write_llama_gguf(tiny_llama_dir, gguf, Q.F16)
    # Room for the app's folders but not for the imported weights (float16 -> as big as the file).
    home = small_disk(gguf.stat().st_size // 2)
    done = cli(home, "import", str(gguf), "--name", "tiny")
    assert_one_line_error(done, "needs about", "free in", str(home), "only")
    no_models_left(home)


def test_import_that_fills_the_disk_keeps_nothing(small_disk, tiny_llama_dir, tmp_path, monkeypatch):
    """Space taken by something else after the check: MLX's own failed write is caught."""
    from optiq_tui.library import staging
    from optiq_tui.library.gguf_import import import_gguf
    from optiq_tui.progress import OptiqError

    gguf = tmp_path / "t.gguf"
    write_llama_gguf(tiny_llama_dir, gguf, Q.F16)
    home = small_disk(gguf.stat().st_size // 2)
    monkeypatch.setenv("OPTIQ_HOME", str(home))
    monkeypatch.setattr(staging, "require_space", lambda *_args: None)
    with pytest.raises(OptiqError, match="disk is full") as caught:
        import_gguf(gguf, "tiny")
    assert "\n" not in str(caught.value) and str(home) in str(caught.value)
    no_models_left(home)


@pytest.mark.demo
def test_demo_onto_a_disk_too_small(small_disk, demo_wheel_dir):
    from optiq_tui.library.demo import WHEEL_DIR_ENV, WHEEL_FILE

    if not (demo_wheel_dir / WHEEL_FILE).exists():
        pytest.skip("the demo wheel is fetched by the other demo tests first")
    home = small_disk(150 * 1000 * 1000)
    done = cli(home, "demo", **{WHEEL_DIR_ENV: str(demo_wheel_dir)})
    assert_one_line_error(done, "needs about", "MB free in", "only")
    no_models_left(home)
    assert [p.name for p in (home / "cache").iterdir() if p.suffix in (".gguf", ".part")] == []
