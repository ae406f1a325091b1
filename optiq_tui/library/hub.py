"""Download an MLX model from the Hugging Face Hub into the Hugging Face cache.

``huggingface_hub.snapshot_download`` does the work: only the files MLX needs
(allow patterns), several files at once, resumable file by file (finished
files stay in the cache and the next pull skips them; since huggingface_hub
1.x a file cut off mid-way is dropped and fetched again whole). Its
``tqdm_class`` hook reports the bytes written, which gives byte-level
progress and a place to stop: raising there aborts every file's download.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from optiq_tui.library.catalog import hf_cache_dir
from optiq_tui.progress import Cancelled, Log, OptiqError, Progress, ProgressFn, check_cancel, no_progress

# What mlx_lm.load needs: config/tokenizer JSON, weights, chat templates, tokenizer models.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
# The bar huggingface_hub uses for bytes written to disk across all files.
_BYTES_BAR = "huggingface_hub.snapshot_download"


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; read it at call time too.
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or value in ("1", "ON", "YES", "TRUE")


def _progress_bar_class(progress: ProgressFn, cancel: threading.Event | None, total: int):
    """A tqdm class for snapshot_download that reports bytes and stops on ``cancel``."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    lock = threading.Lock()
    state = {"done": 0}

    class _Bar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._counts_bytes = kwargs.get("name") == _BYTES_BAR
            kwargs["disable"] = True  # the app draws its own progress
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            check_cancel(cancel)  # raised in a download thread, it aborts that file
            if self._counts_bytes and n:
                with lock:
                    state["done"] += int(n)
                    done = state["done"]
                progress(Progress("download", done, max(total, done), unit="B"))
            return super().update(n)

    return _Bar


def _plan(repo_id: str, endpoint: str | None, cancel: threading.Event | None) -> tuple[int, list[str]]:
    """Bytes still to download, and the files, after checking the repo is an MLX model."""
    from huggingface_hub import snapshot_download

    files = snapshot_download(
        repo_id, allow_patterns=ALLOW_PATTERNS, endpoint=endpoint, cache_dir=hf_cache_dir(), dry_run=True,
        tqdm_class=_progress_bar_class(no_progress, cancel, 0),
    )
    names = [f.filename for f in files]
    if "config.json" not in names:
        raise OptiqError(f"{repo_id} has no config.json: it is not a Transformers/MLX model repo")
    if not any(n.endswith(".safetensors") for n in names):
        raise OptiqError(
            f"{repo_id} has no safetensors weights, so MLX cannot load it "
            "(for a GGUF repo, download the .gguf file and use import)"
        )
    return sum(f.file_size or 0 for f in files if f.will_download), names


def _explain(exc: BaseException, repo_id: str) -> OptiqError | None:
    """A user-facing error for a failed download, looking through wrapped causes
    (a dry run wraps the Hub's answer in DryRunError); None if it is not a download problem."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for err in chain:
        if isinstance(err, OptiqError):
            return err
        if isinstance(err, (HFValidationError, ValueError)) and not isinstance(err, OSError):
            return OptiqError(f"{repo_id!r} is not a valid repo id (expected owner/name): {err}")
        if isinstance(err, GatedRepoError):
            return OptiqError(f"{repo_id} is gated: accept its terms on huggingface.co and log in with `hf auth login`")
        if isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)):
            return OptiqError(
                f"the Hub has no model repo {repo_id!r} (check the spelling; private repos need `hf auth login`)"
            )
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return OptiqError(f"the disk is full while downloading {repo_id}; free some space and pull again (it resumes)")
    for err in chain:
        network = type(err).__module__.startswith(("httpx", "httpcore"))
        if network or isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            return OptiqError(
                f"cannot reach the Hugging Face Hub to download {repo_id} (no network?); try again when online"
            )
    if isinstance(chain[0], OSError):
        return OptiqError(f"downloading {repo_id} failed: {chain[0]}")
    return None


def pull(repo_id: str, *, progress: ProgressFn = no_progress, cancel: threading.Event | None = None):
    """Download ``repo_id`` (only what MLX needs) and return its catalog entry."""
    from huggingface_hub import snapshot_download

    from optiq_tui.library.catalog import inspect_model

    if _offline():
        raise OptiqError(
            f"cannot download {repo_id}: Hub access is switched off (HF_HUB_OFFLINE is set); "
            "unset it, or use a model already on this machine"
        )
    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        total, names = _plan(repo_id, endpoint, cancel)
        progress(Log(f"{repo_id}: {len(names)} files, {total / 2**20:.1f} MB to download"))
        check_cancel(cancel)
        folder = snapshot_download(
            repo_id,
            allow_patterns=ALLOW_PATTERNS,
            endpoint=endpoint,
            cache_dir=hf_cache_dir(),
            tqdm_class=_progress_bar_class(progress, cancel, total),
            max_workers=4,
        )
    except Cancelled:
        progress(Log("download stopped; finished files stay in the cache and the next pull skips them"))
        raise
    except Exception as exc:
        explained = _explain(exc, repo_id)
        if explained is None:
            raise
        raise explained from exc
    return inspect_model(folder, name=repo_id, source="hf-cache", repo_id=repo_id)
