"""A throw-away OpenLDAP directory for tests: Debian's ``slapd`` started on a loopback port with a
``slapd.conf`` and an mdb database in a temporary folder (``apt-get install slapd ldap-utils``),
optionally with StartTLS and LDAPS from a throw-away CA made with openssl. Stopped and removed at
the end; nothing is left listening."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .server import free_port

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "admin-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
PLACEHOLDER = f"cn=placeholder,{SUFFIX}"  # groupOfNames needs a member: this one stays in every group

BASE_LDIF = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: {GROUPS}
objectClass: organizationalUnit
ou: groups

dn: {PLACEHOLDER}
objectClass: organizationalRole
cn: placeholder
"""


def person(uid: str, password: str, mail: Optional[str] = None) -> str:
    mail_line = f"mail: {mail}\n" if mail else ""
    return (f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
            f"{mail_line}userPassword: {password}\n")


def group(cn: str, members: list[str]) -> str:
    lines = "".join(f"member: uid={m},{PEOPLE}\n" for m in members)
    return f"dn: cn={cn},{GROUPS}\nobjectClass: groupOfNames\ncn: {cn}\nmember: {PLACEHOLDER}\n{lines}"


@dataclass(frozen=True)
class Directory:
    url: str  # ldap://127.0.0.1:PORT
    ldaps_url: Optional[str]  # ldaps://127.0.0.1:PORT when started with TLS
    ca_file: Optional[Path]

    def modify(self, dn: str, changes: dict) -> None:
        """Change an entry as the directory's administrator (ldap3 MODIFY_* changes)."""
        import ldap3

        conn = ldap3.Connection(ldap3.Server(self.url, connect_timeout=5), ROOT_DN, ROOT_PW, auto_bind=True,
                                receive_timeout=5)
        try:
            if not conn.modify(dn, changes):
                raise RuntimeError(f"modify {dn}: {conn.result}")
        finally:
            conn.unbind()


def _make_ca(folder: Path) -> tuple[Path, Path, Path]:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt, ext = folder / "server.key", folder / "server.csr", folder / "server.crt", folder / "san.ext"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
            "-days", "2", "-subj", "/CN=xpresso-env test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return ca_crt, crt, key


@contextmanager
def slapd(entries: str = "", tls: bool = False) -> Iterator[Directory]:
    """A running directory holding :data:`BASE_LDIF` and ``entries`` (LDIF)."""
    folder = Path(tempfile.mkdtemp(prefix="xpresso-slapd-"))
    proc: Optional[subprocess.Popen] = None
    try:
        (folder / "db").mkdir()
        root_hash = subprocess.run(["slappasswd", "-s", ROOT_PW], check=True, capture_output=True, text=True,
                                   timeout=30).stdout.strip()
        tls_lines = ""
        ca_file = None
        if tls:
            ca_file, crt, key = _make_ca(folder)
            tls_lines = f"TLSCACertificateFile {ca_file}\nTLSCertificateFile {crt}\nTLSCertificateKeyFile {key}\n"
        schema = "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in ("core", "cosine", "inetorgperson", "nis"))
        conf = folder / "slapd.conf"
        conf.write_text(f"{schema}modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {folder}/slapd.pid\n"
                        f"{tls_lines}database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\n"
                        f"rootpw {root_hash}\ndirectory {folder}/db\n")
        data = folder / "data.ldif"
        data.write_text(BASE_LDIF + "\n" + entries)
        subprocess.run(["slapadd", "-f", str(conf), "-l", str(data)], check=True, capture_output=True, timeout=60)
        port = free_port()
        url = f"ldap://127.0.0.1:{port}"
        ldaps_url = f"ldaps://127.0.0.1:{free_port()}" if tls else None
        listen = " ".join(u + "/" for u in (url, ldaps_url) if u)
        proc = subprocess.Popen(["slapd", "-d", "0", "-f", str(conf), "-h", listen], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            ok = subprocess.run(["ldapwhoami", "-x", "-H", url, "-D", ROOT_DN, "-w", ROOT_PW], capture_output=True,
                                timeout=10).returncode == 0
            if ok:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"slapd did not start: {err[-2000:]}")
            time.sleep(0.05)
        yield Directory(url=url, ldaps_url=ldaps_url, ca_file=ca_file)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stderr:
                proc.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)
