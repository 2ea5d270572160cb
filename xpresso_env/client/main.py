"""`xpresso`: the command line of an xpresso-env server, over HTTP only.

    xpresso login URL (--token T | --user NAME [--password-stdin] [--days N]) [--group G]
    xpresso harnesses|engines list|show|add|edit|rm|history|state ...
    xpresso images list|show|pin|unpin|rm ...      (an image: its id, 4+ first characters of it, or NAME:TAG)
    xpresso build NAME:TAG --ref R [--base B] [--group-share G]... [--follow]
    xpresso logs IMAGE [--follow]
    xpresso cancel IMAGE
    xpresso whoami
    xpresso tokens list|create NAME [--days N]|revoke JTI
    xpresso completion bash|zsh

Tables for people, ``--json`` for scripts (the API's own records); ``-f FIELD=VALUE`` filters
every list. Errors: one line on stderr with the API's own words, exit 1; ``--debug`` adds the
traceback. ``build --follow`` and ``logs --follow`` exit 0 only when the build ends ``successful``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable, Optional, Sequence

from rich.prompt import Confirm, Prompt

from . import render
from .completion import script
from .config import ClientConfig, bare_token, config_path, load_file, normal_url, resolve, save_file
from .errors import ClientError
from .follow import Follower, Sinks
from .http import Api, dumps
from .lookup import UUID_RE, explain_group, image_id
from .parser import KINDS, build_parser
from .signin import Credentials, own_token, read_password, settle_group, sign_in, sign_out

EXIT_INTERRUPTED = 130


class Cli:
    def __init__(self, args: argparse.Namespace, env: dict[str, str]):
        self.args = args
        self.env = env
        self.json = bool(getattr(args, "json", False))
        self.out = render.make_console()
        self.err = render.make_console(stderr=True)
        self._api: Optional[Api] = None
        self.config = resolve({k: getattr(args, k, None) for k in ("url", "token", "group")}, env,
                              load_file(config_path(env)))

    @property
    def api(self) -> Api:
        if self._api is None:
            if not self.config.url:
                raise ClientError("no server: run `xpresso login URL --user NAME` (or `--token T`), or set XPRESSO_URL")
            if not self.config.token:
                raise ClientError("no token: run `xpresso login URL --user NAME` (or `--token T`), or set XPRESSO_TOKEN")
            self._api = Api(self.config.url, self.config.token, self.config.group)
        return self._api

    def print_json(self, data: Any) -> None:
        sys.stdout.write(dumps(data) + "\n")
        sys.stdout.flush()

    def show(self, data: Any, skip: Sequence[str] = ()) -> None:
        if self.json:
            self.print_json(data)
        else:
            render.record(self.out, data, skip)

    def listing(self, kind: str, path: Sequence[str], params: dict[str, str]) -> None:
        """A list the API filters (``-f`` goes to it as query parameters)."""
        resp = self.api.request("GET", self.api.path(*path), params=params)
        self.print_list(kind, resp.json(), resp.headers.get("X-Total-Count"))

    def print_list(self, kind: str, records: list[dict[str, Any]], total: Optional[str] = None) -> None:
        if self.json:
            self.print_json(records)
        else:
            render.table(self.out, kind, records, total)

    def list_params(self, *names: str) -> dict[str, str]:
        """The query of a list: ``-f FIELD=VALUE`` items, then the named options, ``--deleted`` and
        ``--limit``."""
        a = self.args
        params = filters(a.filter)
        for name in names:
            if getattr(a, name, None):
                params[name] = getattr(a, name)
        if getattr(a, "deleted", False):
            params["deleted"] = "true"
        if getattr(a, "limit", None) is not None:
            params["limit"] = str(a.limit)
        return params

    # -- commands ---------------------------------------------------------------------------
    def login(self) -> int:
        a = self.args
        url = normal_url(a.server)
        if a.login_token is not None and (a.password_stdin or a.days is not None):
            raise ClientError("--password-stdin and --days go with --user NAME")
        session = None
        if a.login_user is not None:
            password = read_password(a.login_user, url, a.password_stdin)
            session = sign_in(url, Credentials(a.login_user, password))
        try:
            # the token (or session) and the group are checked before anything is kept
            me = Api(url, session or bare_token(a.login_token), None).get("me")
            group = settle_group(me, a.login_group, self._ask_group if sys.stdin.isatty() else None)
            token = own_token(url, session, a.days) if session else bare_token(a.login_token)
        finally:
            if session:
                sign_out(url, session)
        me = Api(url, token, group).get("me")
        path = config_path(self.env)
        save_file(path, ClientConfig(url=url, token=token, group=group))
        where = f", group {me['group']}" if me.get("group") else ""
        kept = " with an API token of its own" if session else ""
        self.err.print(f"Logged in to {url} as {me['user']}{where}{kept} (saved in {path})")
        return 0

    def _ask_group(self, question: str, groups: list[str]) -> str:
        return Prompt.ask(question, choices=groups, console=self.err)

    def whoami(self) -> int:
        me = self.api.get("me")
        if self.json:
            self.print_json(me)
            return 0
        who = me["user"] + (" (system administrator)" if me.get("superuser") else "")
        self.out.print(f"{who} at {self.config.url}")
        for group, role in me.get("groups", {}).items():
            mark = "*" if group == me.get("group") else " "
            self.out.print(f" {mark} {group}: {role or 'any (system administrator)'}")
        if me.get("group"):
            self.out.print(f"permissions in {me['group']}: {', '.join(me['permissions']) or '(read only)'}")
        return 0

    def _record_id(self, kind: str, ref: str) -> str:
        if UUID_RE.match(ref):
            return ref
        try:
            return self.api.get("resources", kind, ref)["id"]
        except ClientError as exc:
            if exc.status == 404:
                raise ClientError(f"no {KINDS[kind]} named {ref!r} in group "
                                  f"{self.config.group or '(your only group)'}", status=404) from None
            raise

    def _fields(self, kind: str) -> dict[str, Any]:
        a = self.args
        names = ["configuration_state", "site", "bldg"] + (
            ["path", "harness", "supporting_path"] if kind == "harnesses" else ["base_url", "type", "username",
                                                                                 "api_token"])
        body = {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}
        for item in a.set:
            field, sep, value = item.partition("=")
            if not sep or not field:
                raise ClientError(f"--set wants FIELD=VALUE, got {item!r}")
            body[field] = {"true": True, "false": False, "null": None}.get(value, value)
        return body

    def registry(self, kind: str) -> int:
        a = self.args
        action = a.action
        if action == "list":
            self.listing(kind, [kind], self.list_params())
        elif action == "add":
            self.show(self.api.call("POST", kind, body={"name": a.name, **self._fields(kind)}))
        elif action == "edit":
            body = self._fields(kind)
            if a.new_name:
                body["name"] = a.new_name
            if not body:
                raise ClientError("nothing to change: give at least one field option")
            self.show(self.api.call("PATCH", kind, self._record_id(kind, a.ref), body=body))
        elif action == "show":
            self.show(self.api.get(kind, self._record_id(kind, a.ref)))
        elif action == "rm":
            record_id = self._record_id(kind, a.ref)
            self.api.call("DELETE", kind, record_id)
            if not self.json:
                self.err.print(f"deleted {KINDS[kind]} {a.ref}")
        elif action == "history":
            # the API pages a history but does not filter it: -f is applied here
            params = {"limit": str(a.limit)} if a.limit is not None else {}
            entries = self.api.get(kind, self._record_id(kind, a.ref), "history", params=params)
            self.print_list("history", matching(entries, filters(a.filter)))
        elif action == "state":
            self.show(self.api.get(kind, self._record_id(kind, a.ref), "state"))
        return 0

    def images(self) -> int:
        a = self.args
        if a.action == "list":
            self.listing("images", ["images"], self.list_params("name", "tag", "status", "git_ref"))
            return 0
        uuid = image_id(self.api, a.image)
        if a.action == "show":
            self.show(self.api.get("images", uuid), skip=("yaml_content", "credentials"))
        elif a.action in ("pin", "unpin"):
            self.show(self.api.call("PATCH", "images", uuid, body={"pin_version": a.action == "pin"}),
                      skip=("yaml_content", "credentials"))
        elif a.action == "rm":
            self.api.call("DELETE", "images", uuid)
            if not self.json:
                self.err.print(f"deleted image {uuid}")
        return 0

    def build(self) -> int:
        a = self.args
        name, sep, tag = a.image.rpartition(":")
        if not sep or not name or not tag or "/" in tag:
            raise ClientError(f"expected NAME:TAG, got {a.image!r}")
        body: dict[str, Any] = {"name": name, "tag": tag, "git_ref": a.ref}
        if a.base:
            body["base_ref"] = a.base
        if a.group_share:
            body["groups"] = a.group_share
        record = self.api.call("POST", "images", "polaris_build", body=body)
        if not a.follow:
            if self.json:
                self.print_json(record)
            else:
                self.out.print(f"building {name}:{tag} as {record['uuid']}")
                self.err.print(f"follow it with: xpresso logs {record['uuid']} --follow", style="dim")
            return 0
        if not self.json:
            self.err.print(f"building {name}:{tag} as {record['uuid']}")
        return self.follow(record["uuid"])

    def logs(self) -> int:
        uuid = image_id(self.api, self.args.image)
        if self.args.follow:
            return self.follow(uuid)
        sys.stdout.buffer.write(self.api.text("images", uuid, "logs"))
        sys.stdout.flush()
        return 0

    def follow(self, image_id: str) -> int:
        # The log on a terminal gets the progress line; anything else gets the bytes. With --json
        # the log goes to stderr so stdout holds only the final record.
        tty = not self.json and sys.stdout.isatty()
        raw = sys.stderr.buffer if self.json else (None if tty else sys.stdout.buffer)
        follower = Follower(self.api, image_id, Sinks(console=self.out, raw=raw), tty,
                            self.args.cancel_on_interrupt, self._ask_cancel)
        record = follower.run()
        status = record.get("status")
        if self.json:
            self.print_json(record)
        else:
            error = (record.get("meta") or {}).get("error")
            line = f"{record.get('name')}:{record.get('tag')} {status}" + (f": {error}" if error else "")
            (self.out if tty else self.err).print(render.styled(status).replace(status, line, 1) if status else line)
        return 0 if status == "successful" else 1

    def _ask_cancel(self, image_id: str) -> bool:
        if not sys.stdin.isatty():
            return False
        return Confirm.ask(f"Cancel build {image_id}?", default=False, console=self.err)

    def cancel(self) -> int:
        uuid = image_id(self.api, self.args.image)
        self.show(self.api.call("POST", "images", uuid, "cancel"), skip=("yaml_content", "credentials"))
        return 0

    def tokens(self) -> int:
        a = self.args
        if a.action == "list":
            records = matching(self.api.get("me", "tokens"), filters(a.filter))
            self.print_list("tokens", records[:a.limit] if a.limit is not None else records)
        elif a.action == "create":
            body: dict[str, Any] = {"name": a.name}
            if a.days is not None:
                body["days"] = a.days
            made = self.api.call("POST", "me", "tokens", body=body)
            if self.json:
                self.print_json(made)
            else:
                self.err.print(f"token {made.get('jti')} ({made.get('name')}) expires {made.get('expires')}; "
                               "it is shown this once:")
                print(made["token"], flush=True)  # the last line: `Jwt ...`, as `xpresso-env token create`
        elif a.action == "revoke":
            self.api.call("DELETE", "me", "tokens", a.jti)
            if not self.json:
                self.err.print(f"revoked token {a.jti}")
        return 0

    def completion(self) -> int:
        sys.stdout.write(script(self.args.shell, build_parser()))
        return 0

    def run(self) -> int:
        command = self.args.command
        handlers: dict[str, Callable[[], int]] = {
            "login": self.login, "whoami": self.whoami, "images": self.images, "build": self.build,
            "logs": self.logs, "cancel": self.cancel, "tokens": self.tokens, "completion": self.completion,
            "harnesses": lambda: self.registry("harnesses"), "engines": lambda: self.registry("engines")}
        try:
            return handlers[command]()
        except ClientError as exc:
            # a refused group: say which groups the caller is in (GET /api/v2/me)
            better = explain_group(self._api, self.config.group, exc) if self._api is not None else None
            if better is None:
                raise
            raise better from exc


def filters(items: Sequence[str]) -> dict[str, str]:
    """``-f FIELD=VALUE`` items as a mapping."""
    out: dict[str, str] = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ClientError(f"-f wants FIELD=VALUE, got {item!r}")
        out[field] = value
    return out


def matching(records: list[dict[str, Any]], wanted: dict[str, str]) -> list[dict[str, Any]]:
    """The records whose fields equal ``wanted``, for lists the API does not filter (values as
    the table shows them: true/false as the JSON words)."""
    if not wanted:
        return records
    known = set().union(*(r.keys() for r in records)) if records else set(wanted)
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ClientError(f"-f: no field {', '.join(unknown)} here; fields: {', '.join(sorted(known))}")

    def text(value: Any) -> str:
        return json.dumps(value) if isinstance(value, bool) or value is None else str(value)

    return [r for r in records if all(text(r.get(k)) == v for k, v in wanted.items())]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return Cli(args, dict(os.environ)).run()
    except ClientError as exc:
        if debug:
            traceback.print_exc()
        print(f"xpresso: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("xpresso: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `xpresso images list | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # never a traceback for people; --debug shows it
        if debug:
            traceback.print_exc()
        print(f"xpresso: error: {type(exc).__name__}: {' '.join(str(exc).split())} (--debug shows more)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
