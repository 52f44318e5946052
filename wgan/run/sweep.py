"""The sweep folder: ``sweep.json`` and one ordinary run folder per member.

Every member folder is a run folder like any other (``wgan.report``, ``wgan.sample`` and
``--resume`` take it as they take a single run). ``sweep.json`` records the members (their folder
names, settings, the rank that trains them) and the shared settings; each member's status lives in
its own run.json (one writer: the process that trains it), and :meth:`SweepFolder.statuses` reads
them back. Only the first process (rank 0) writes sweep.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wgan.run.atomic import atomic_write_text
from wgan.run.folder import SWEEP_FILE, SWEEP_REPORT_FILE, RunFolder, RunFolderError, effective_status, holds_run

SWEEP_KIND = "wgan-sweep"


class SweepFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def info_path(self) -> Path:
        return self.path / SWEEP_FILE

    @property
    def report_path(self) -> Path:
        return self.path / SWEEP_REPORT_FILE

    def member(self, name: str) -> RunFolder:
        return RunFolder(self.path / name)

    def check_new(self) -> None:
        """Refuse a folder that already holds a run or a sweep (as --out)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--out {self.path} exists and is not a folder")
        if self.info_path.exists() or holds_run(self.path):
            raise RunFolderError(
                f"--out {self.path} already holds a run or a sweep; pass --resume {self.path} to continue it, "
                "or choose another --out"
            )

    def write(self, info: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.info_path, json.dumps({"kind": SWEEP_KIND, **info}, indent=2) + "\n")

    def read(self) -> dict[str, Any]:
        try:
            info = json.loads(self.info_path.read_text())
        except OSError:
            raise RunFolderError(f"{self.path} is not a sweep folder (no {SWEEP_FILE})") from None
        except ValueError as exc:
            raise RunFolderError(f"{self.info_path} is not valid JSON: {exc}") from None
        if not isinstance(info, dict) or info.get("kind") != SWEEP_KIND or not isinstance(info.get("members"), list):
            raise RunFolderError(f"{self.info_path} is not a sweep record")
        return info

    def statuses(self, info: dict[str, Any]) -> dict[str, str]:
        """Each member's status as its run.json tells it (``missing`` for a folder never made)."""
        out = {}
        for member in info["members"]:
            folder = self.member(member["name"])
            out[member["name"]] = effective_status(folder.read_run_info()) if folder.run_json.is_file() else "missing"
        return out

    def refresh(self) -> dict[str, Any]:
        """sweep.json with every member's current status (rank 0, when the sweep stops)."""
        info = self.read()
        statuses = self.statuses(info)
        for member in info["members"]:
            member["status"] = statuses[member["name"]]
        info.pop("kind", None)
        self.write(info)
        return info
