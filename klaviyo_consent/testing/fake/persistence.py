"""A file-backed fake: one Klaviyo account shared by several processes (the demo)."""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from klaviyo_consent.testing.fake.core import FakeKlaviyo
from klaviyo_consent.testing.fake.records import FakeResponse

#: What a file-backed fake keeps between processes: its profiles, lists and jobs.
_PERSISTED = (
    "_profiles",
    "_by_email",
    "_by_phone",
    "_lists",
    "_pending",
    "_suppression_jobs",
    "_import_jobs",
    "_import_errors",
    "_seq",
    "_id_prefix",
    "jobs",
    "deletion_jobs",
    "rejected_emails",
)


class FileBackedFakeKlaviyo(FakeKlaviyo):
    """A fake whose account lives in a file, so several processes see one Klaviyo.

    The demo needs it: ``seed_demo`` pushes in one process and ``runserver`` reads back in
    another. It reloads the file when another process changed it and saves after each write.
    Demo and local use only: the file is a pickle this class wrote itself.
    """

    def __init__(self, state_file: str, **kwargs: Any) -> None:
        self.state_file = state_file
        self._loaded_mtime: float | None = None
        super().__init__(**kwargs)
        self._reload()

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.state_file).st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def _reload(self) -> None:
        mtime = self._mtime()
        if mtime is None or mtime == self._loaded_mtime:
            return
        with open(self.state_file, "rb") as handle:
            state = pickle.load(handle)
        for name in _PERSISTED:
            if name in state:
                setattr(self, name, state[name])
        self._loaded_mtime = mtime

    def save(self) -> None:
        state = {name: getattr(self, name) for name in _PERSISTED}
        temporary = f"{self.state_file}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            pickle.dump(state, handle)
        os.replace(temporary, self.state_file)
        self._loaded_mtime = self._mtime()

    @contextmanager
    def editing(self) -> Iterator[FakeKlaviyo]:
        """Reload the account, let the caller change it, save it for the other processes."""
        with self._lock:
            self._reload()
            yield self
            self.save()

    def handle(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FakeResponse:
        with self._lock:
            self._reload()
            response = super().handle(method, url, headers, body)
            if method.upper() != "GET" and response.status < 300:
                self.save()
            return response


_files_lock = threading.Lock()
_file_fakes: dict[str, FileBackedFakeKlaviyo] = {}


def get_file_backed_fake(state_file: str, **kwargs: Any) -> FileBackedFakeKlaviyo:
    """One file-backed fake per state file in this process, shared by all its threads."""
    with _files_lock:
        fake = _file_fakes.get(state_file)
        if fake is None:
            fake = _file_fakes[state_file] = FileBackedFakeKlaviyo(state_file, **kwargs)
        return fake
