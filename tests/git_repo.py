"""A real git repository made for one test (shared by the builder and image tests)."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass
class GitRepo:
    path: Path
    clock: int = 1_700_000_000  # commit dates move forward one minute per commit: stable ids

    def git(self, *args: str) -> str:
        self.clock += 60
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
               "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
               "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
               "GIT_AUTHOR_DATE": f"@{self.clock} +0000", "GIT_COMMITTER_DATE": f"@{self.clock} +0000"}
        res = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=self.path, env=env,
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise AssertionError(f"git {' '.join(args)}: {res.stderr}")
        return res.stdout.strip()

    def write(self, files: dict[str, Optional[str]]) -> None:
        """Write files (None deletes one)."""
        for name, text in files.items():
            target = self.path / name
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def commit(self, files: dict[str, Optional[str]], message: str = "change") -> str:
        self.write(files)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.rev("HEAD")

    def rev(self, name: str) -> str:
        return self.git("rev-parse", name)

    def checkout(self, branch: str, create: bool = False, start: Optional[str] = None) -> None:
        args = ["checkout", "-q"] + (["-b", branch] if create else [branch])
        self.git(*args, *([start] if start else []))

    def branch(self, name: str, start: str = "main") -> None:
        self.checkout(name, create=True, start=start)
