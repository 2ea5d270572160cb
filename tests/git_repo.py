"""A real git repository made for one test (shared by the builder and image tests)."""
from __future__ import annotations

import os
import shutil
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


HELLO_DOCKERFILE = "FROM scratch\nCOPY hello.txt /hello.txt\n"


def hello_polaris(path: Path, extra: Optional[dict[str, str]] = None) -> GitRepo:
    """A new Polaris repository at ``path`` whose main holds a Dockerfile that dry-run and Docker
    both build (FROM scratch + COPY hello.txt), and ``extra`` files."""
    repo = GitRepo(path)
    repo.path.mkdir()
    repo.git("init", "-q", "-b", "main")
    repo.commit({"Dockerfile": HELLO_DOCKERFILE, "hello.txt": "hello\n", **(extra or {})}, "initial")
    return repo


def slow_clone_env(folder: Path, sleep: list[str], first_only: bool = False) -> dict[str, str]:
    """An environment whose PATH starts with a `git` that runs ``sleep`` (a command line) before
    each clone, or only before the first one, in the clone's own process (as a clone of a big
    repository takes its time)."""
    bin_dir = folder / "slow-bin"
    bin_dir.mkdir()
    hold = " ".join(sleep)
    if first_only:
        hold = f'if mkdir "{folder}/slow-clone-taken" 2>/dev/null; then {hold}; fi'
    wrapper = bin_dir / "git"
    wrapper.write_text(f"""#!/bin/sh
case " $* " in
  *" clone "*) {hold} ;;
esac
exec {shutil.which("git")} "$@"
""")
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
