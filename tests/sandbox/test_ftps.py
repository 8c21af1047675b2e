# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sandbox's FTPS servers and CDR files, driven by real clients over real TLS.

Both servers (embedded pyftpdlib and Debian's vsftpd) must satisfy curl, lftp
with the vendor guide's settings, and Python's ftplib; the embedded server's
fault modes must show the faults. vsftpd needs root (it logs in a local user).
"""

from __future__ import annotations

import datetime
import ftplib
import hashlib
import io
import json
import os
import pwd
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import types
import zipfile

import pytest

from sandbox.cdr import KNOWN_COLUMNS, generate_cdr_files
from sandbox.ftps import HOSTILE_NAMES, EmbeddedFtpsServer
from sandbox.pki import write_server_pki
from sandbox.vsftpd import VsftpdError, VsftpdServer

# Unique per run: vsftpd checks a real local user's password, and concurrent runs must not reset each other's.
VSFTPD_USER = "magsbx-" + secrets.token_hex(4)
LFTP_GUIDE_SETTINGS = (
    "set ftp:ssl-force yes", "set ftp:ssl-protect-data yes", "set ftp:ssl-protect-list yes",
    "set ssl:check-hostname yes", "set ssl:verify-certificate yes",
)
# How each server refuses a plain-text USER, and a data connection without PROT P.
PLAIN_LOGIN_REPLY = {"embedded": "550 SSL/TLS required on the control channel", "vsftpd": "530 Non-anonymous sessions must use encryption"}
CLEAR_DATA_REPLY = {"embedded": "550 SSL/TLS required on the data channel", "vsftpd": "522 Data connections must be encrypted"}


class SessionReusingFtpTls(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session (CPython gh-63699)."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # the plain socket: FTP_TLS would wrap it without the session
        if self._prot_p:
            # Read the session now: under TLS 1.3 the ticket arrives after the handshake.
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


@pytest.fixture(scope="module")
def world():
    """CA, server certificate and an FTP root (cdr/ inside) under a directory vsftpd's user can search."""
    base = tempfile.mkdtemp(prefix="magrathea-ftps-")
    os.chmod(base, 0o755)
    pki = write_server_pki(os.path.join(base, "pki"))
    root = os.path.join(base, "root")
    files = generate_cdr_files(os.path.join(root, "cdr"), count=4)
    yield types.SimpleNamespace(base=base, pki=pki, root=root, files=files, password=secrets.token_urlsafe(12))
    shutil.rmtree(base)


def embedded_server(world, **faults):
    return EmbeddedFtpsServer(
        certfile=world.pki["cert_file"], keyfile=world.pki["key_file"], username="magrathea", password=world.password,
        root=world.root, **faults,
    )


@pytest.fixture(scope="module")
def embedded(world):
    with embedded_server(world) as server:
        yield server


@pytest.fixture(scope="module")
def vsftpd(world):
    server = VsftpdServer(
        certfile=world.pki["cert_file"], keyfile=world.pki["key_file"], username=VSFTPD_USER, password=world.password,
        root=world.root, workdir=os.path.join(world.base, "vsftpd"),
    )
    with server:
        yield server


@pytest.fixture(params=["embedded", "vsftpd"])
def server(request, world):
    running = request.getfixturevalue(request.param)
    return types.SimpleNamespace(kind=request.param, port=running.port, username=running.username, password=world.password)


def verifying_context(world):
    return ssl.create_default_context(cafile=world.pki["ca_file"])


def ftps_login(world, port, username, password, ftp_class=SessionReusingFtpTls, context=None):
    ftp = ftp_class(context=context or verifying_context(world), timeout=10)
    ftp.connect("localhost", port)
    ftp.auth()
    ftp.login(username, password)
    ftp.prot_p()
    return ftp


def write_netrc(directory, username, password, name="netrc"):
    path = os.path.join(directory, name)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("machine localhost login %s password %s\n" % (username, password))
    return path


def curl(world, netrc, url, *args):
    command = ["curl", "--silent", "--show-error", "--ssl-reqd", "--cacert", world.pki["ca_file"], "--netrc-file", netrc, *args, url]
    return subprocess.run(command, capture_output=True, timeout=30, check=False)


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


# --- both servers ----------------------------------------------------------------------------------------------------


def test_curl_lists_and_fetches_byte_identical(server, world, tmp_path):
    netrc = write_netrc(tmp_path, server.username, server.password)
    listing = curl(world, netrc, "ftp://localhost:%d/cdr/" % server.port)
    assert listing.returncode == 0, listing.stderr
    for path in world.files:
        assert os.path.basename(path).encode() in listing.stdout
    wanted = world.files[-1]
    fetched = tmp_path / "fetched.zip"
    download = curl(world, netrc, "ftp://localhost:%d/cdr/%s" % (server.port, os.path.basename(wanted)), "--output", str(fetched))
    assert download.returncode == 0, download.stderr
    assert fetched.read_bytes() == read_bytes(wanted)


def test_lftp_with_guide_settings_mirrors_the_directory(server, world, tmp_path):
    write_netrc(tmp_path, server.username, server.password, name=".netrc")
    target = tmp_path / "mirror"
    script = "; ".join(LFTP_GUIDE_SETTINGS + (
        "set ssl:ca-file %s" % world.pki["ca_file"], "set net:max-retries 2", "set net:timeout 10",
        "open ftp://%s@localhost:%d" % (server.username, server.port), "mirror cdr %s" % target,
    ))
    result = subprocess.run(["lftp", "-c", script], env=dict(os.environ, HOME=str(tmp_path)), capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(target)) == sorted(os.path.basename(path) for path in world.files)
    for path in world.files:
        assert (target / os.path.basename(path)).read_bytes() == read_bytes(path)


def test_lftp_refuses_a_certificate_it_cannot_verify(server, tmp_path):
    write_netrc(tmp_path, server.username, server.password, name=".netrc")
    other_ca = write_server_pki(str(tmp_path / "other-pki"))["ca_file"]
    script = "; ".join(LFTP_GUIDE_SETTINGS + (
        "set ssl:ca-file %s" % other_ca, "set net:max-retries 1", "set net:timeout 5",
        "open ftp://%s@localhost:%d" % (server.username, server.port), "cls cdr",
    ))
    result = subprocess.run(["lftp", "-c", script], env=dict(os.environ, HOME=str(tmp_path)), capture_output=True, timeout=60, check=False)
    assert result.returncode != 0
    assert b"MAG000001" not in result.stdout


def test_plain_text_login_is_refused(server):
    ftp = ftplib.FTP(timeout=10)
    ftp.connect("localhost", server.port)
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.login(server.username, server.password)
    finally:
        ftp.close()
    assert str(refused.value).startswith(PLAIN_LOGIN_REPLY[server.kind])


def test_data_connection_without_prot_p_is_refused(server, world):
    ftp = SessionReusingFtpTls(context=verifying_context(world), timeout=10)
    ftp.connect("localhost", server.port)
    ftp.auth()
    ftp.login(server.username, server.password)
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.nlst("cdr")
    finally:
        ftp.close()
    assert str(refused.value).startswith(CLEAR_DATA_REPLY[server.kind])


def test_wrong_password_is_refused(server, world):
    ftp = SessionReusingFtpTls(context=verifying_context(world), timeout=10)
    ftp.connect("localhost", server.port)
    ftp.auth()
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.login(server.username, server.password + "-wrong")
    finally:
        ftp.close()
    assert str(refused.value).startswith("530")


def test_session_reusing_ftplib_downloads_byte_identical(server, world):
    ftp = ftps_login(world, server.port, server.username, server.password)
    try:
        assert ftp.sock.version() == "TLSv1.3"
        assert sorted(os.path.basename(name) for name in ftp.nlst("cdr")) == sorted(os.path.basename(path) for path in world.files)
        received = io.BytesIO()
        ftp.retrbinary("RETR cdr/%s" % os.path.basename(world.files[0]), received.write)
    finally:
        ftp.close()
    assert received.getvalue() == read_bytes(world.files[0])


def test_ftp_root_is_read_only(server, world):
    ftp = ftps_login(world, server.port, server.username, server.password)
    try:
        with pytest.raises(ftplib.error_perm):
            ftp.storbinary("STOR cdr/uploaded.zip", io.BytesIO(b"not a CDR"))
        with pytest.raises(ftplib.error_perm):
            ftp.delete("cdr/" + os.path.basename(world.files[0]))
    finally:
        ftp.close()
    assert sorted(os.listdir(os.path.join(world.root, "cdr"))) == sorted(os.path.basename(path) for path in world.files)


# --- vsftpd's strictness ---------------------------------------------------------------------------------------------


def test_stock_ftplib_fails_vsftpd_session_reuse_requirement(vsftpd, world):
    ftp = ftps_login(world, vsftpd.port, VSFTPD_USER, world.password, ftp_class=ftplib.FTP_TLS)
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.retrbinary("RETR cdr/%s" % os.path.basename(world.files[0]), io.BytesIO().write)
    finally:
        ftp.close()
    assert str(refused.value) == "522 SSL connection failed: session reuse required"


def test_stock_ftplib_passes_the_embedded_server(embedded, world):
    """pyftpdlib cannot require session reuse: only vsftpd proves a client's data connections resume the session."""
    ftp = ftps_login(world, embedded.port, "magrathea", world.password, ftp_class=ftplib.FTP_TLS)
    try:
        received = io.BytesIO()
        ftp.retrbinary("RETR cdr/%s" % os.path.basename(world.files[0]), received.write)
    finally:
        ftp.close()
    assert received.getvalue() == read_bytes(world.files[0])


def test_vsftpd_has_no_mlsd_but_the_embedded_server_has(vsftpd, embedded, world):
    ftp = ftps_login(world, vsftpd.port, VSFTPD_USER, world.password)
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            list(ftp.mlsd("cdr"))
    finally:
        ftp.close()
    assert str(refused.value).startswith("500")
    ftp = ftps_login(world, embedded.port, "magrathea", world.password)
    try:
        facts = dict(ftp.mlsd("cdr"))
    finally:
        ftp.close()
    name = os.path.basename(world.files[0])
    assert facts[name]["size"] == str(os.path.getsize(world.files[0]))


def host_accounts():
    """What this machine's accounts and PAM services are: none of it may change while a vsftpd sandbox runs."""
    digest = hashlib.sha256()
    for path in ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"):
        with open(path, "rb") as handle:
            digest.update(handle.read())
    digest.update("\n".join(sorted(os.listdir("/etc/pam.d"))).encode())
    return digest.hexdigest()


def test_vsftpd_max_connections_answers_421_and_its_user_never_touches_this_machine(world):
    username = "magsbx-" + secrets.token_hex(4)
    server = VsftpdServer(
        certfile=world.pki["cert_file"], keyfile=world.pki["key_file"], username=username, password=world.password,
        root=world.root, workdir=os.path.join(world.base, "vsftpd-limited"), max_connections=1,
    )
    before = host_accounts()
    with server:
        held = ftps_login(world, server.port, username, world.password)
        with pytest.raises(ftplib.error_temp) as refused:
            ftplib.FTP_TLS(context=verifying_context(world), timeout=10).connect("localhost", server.port)
        # The user vsftpd logs in and its PAM service live in vsftpd's private /etc only.
        with pytest.raises(KeyError):
            pwd.getpwnam(username)
        assert host_accounts() == before
    assert str(refused.value).startswith("421")
    try:
        with pytest.raises((EOFError, OSError)):
            held.voidcmd("NOOP")  # stop() ended the session processes too
    finally:
        held.close()
    assert host_accounts() == before


def test_vsftpd_refuses_a_root_its_user_cannot_reach(world, tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    server = VsftpdServer(
        certfile=world.pki["cert_file"], keyfile=world.pki["key_file"], username=VSFTPD_USER, password=world.password,
        root=str(hidden / "root"), workdir=str(tmp_path / "work"),
    )
    (hidden / "root").mkdir()
    with pytest.raises(VsftpdError, match="cannot reach"):
        server.start()


def test_vsftpd_never_takes_over_an_existing_account(world, tmp_path):
    server = VsftpdServer(
        certfile=world.pki["cert_file"], keyfile=world.pki["key_file"], username="root", password="would-be-password",
        root=world.root, workdir=str(tmp_path / "work"),
    )
    with pytest.raises(VsftpdError, match="local user 'root' exists on this machine"):
        server.start()


# --- the embedded server's fault modes -------------------------------------------------------------------------------


def test_drop_after_bytes_truncates_and_rest_resumes(world, tmp_path):
    wanted = world.files[0]
    limit = 256
    assert os.path.getsize(wanted) > 2 * limit
    with embedded_server(world, drop_after_bytes=limit) as server:
        netrc = write_netrc(tmp_path, "magrathea", world.password)
        partial = tmp_path / "partial.zip"
        download = curl(world, netrc, "ftp://localhost:%d/cdr/%s" % (server.port, os.path.basename(wanted)), "--output", str(partial))
        assert download.returncode != 0
        assert partial.read_bytes() == read_bytes(wanted)[:limit]

        ftp = ftps_login(world, server.port, "magrathea", world.password)
        received, attempts = bytearray(), 0
        try:
            while len(received) < os.path.getsize(wanted):
                attempts += 1
                try:
                    ftp.retrbinary("RETR cdr/%s" % os.path.basename(wanted), received.extend, rest=len(received) or None)
                except ftplib.error_temp as aborted:
                    assert str(aborted).startswith("426")
                except (ssl.SSLError, OSError):
                    # The data connection was cut without close_notify; the control connection still holds the 426.
                    with pytest.raises(ftplib.error_temp, match="^426"):
                        ftp.getresp()
        finally:
            ftp.close()
    assert bytes(received) == read_bytes(wanted)
    assert attempts == -(-os.path.getsize(wanted) // limit)


def test_max_connections_answers_421(world):
    with embedded_server(world, max_connections=2) as server:
        held = [ftps_login(world, server.port, "magrathea", world.password) for _slot in range(2)]
        try:
            with pytest.raises(ftplib.error_temp) as refused:
                ftplib.FTP_TLS(context=verifying_context(world), timeout=10).connect("localhost", server.port)
        finally:
            for ftp in held:
                ftp.close()
    assert str(refused.value).startswith("421")


def test_connection_log_counts_open_connections_and_421_refusals(world, tmp_path):
    log_path = tmp_path / "ftps.log"
    with embedded_server(world, max_connections=2, log_path=str(log_path)) as server:
        held = [ftps_login(world, server.port, "magrathea", world.password) for _slot in range(2)]
        with pytest.raises(ftplib.error_temp):
            ftplib.FTP_TLS(context=verifying_context(world), timeout=10).connect("localhost", server.port)
        for ftp in held:
            ftp.quit()
        again = ftps_login(world, server.port, "magrathea", world.password)
        again.quit()
        deadline = time.monotonic() + 10
        while server.events.open and time.monotonic() < deadline:
            time.sleep(0.05)
        peak, still_open = server.events.peak, server.events.open
    events = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    assert [(entry["event"], entry["open"]) for entry in events if entry["event"] != "login"] == [
        ("connect", 1), ("connect", 2), ("refused", 2), ("close", 1), ("close", 0), ("connect", 1), ("close", 0)]
    assert all(entry["peer"].startswith("127.0.0.1:") for entry in events)
    assert peak == 2 and still_open == 0


def test_hostile_names_appear_in_list_and_mlsd(world):
    with embedded_server(world, hostile_names=True) as server:
        ftp = ftps_login(world, server.port, "magrathea", world.password)
        try:
            listing, machine_listing = [], []
            ftp.retrlines("LIST cdr", listing.append)
            ftp.retrlines("MLSD cdr", machine_listing.append)
        finally:
            ftp.close()
    for name in HOSTILE_NAMES:
        first_line = name.partition("\n")[0]
        assert any(line.endswith(" " + first_line) for line in listing), name
        assert any(line.endswith("; " + first_line) for line in machine_listing), name
    assert "line" in listing
    for path in world.files:
        assert any(line.endswith(" " + os.path.basename(path)) for line in listing)


def read_listing_raw(ftp, command):
    """(bytes, whether the data connection ended with a TLS close_notify, final reply) of one listing."""
    conn = ftp.transfercmd(command)
    conn.suppress_ragged_eofs = False
    data, clean = bytearray(), True
    try:
        while True:
            chunk = conn.recv(8192)
            if not chunk:
                break
            data.extend(chunk)
    except ssl.SSLEOFError:
        clean = False
    finally:
        conn.close()
    return bytes(data), clean, ftp.voidresp()


def test_cut_listing_ends_without_close_notify_yet_answers_226(world):
    with embedded_server(world, cut_listing_after_bytes=100) as server:
        ftp = ftps_login(world, server.port, "magrathea", world.password)
        try:
            cut, cut_clean, cut_reply = read_listing_raw(ftp, "MLSD cdr")
        finally:
            ftp.close()
    with embedded_server(world) as server:
        ftp = ftps_login(world, server.port, "magrathea", world.password)
        try:
            whole, whole_clean, whole_reply = read_listing_raw(ftp, "MLSD cdr")
        finally:
            ftp.close()
    assert cut == whole[:100] and len(whole) > 100
    assert cut_reply.startswith("226") and whole_reply.startswith("226")
    assert not cut_clean and whole_clean


def test_overlong_download_streams_more_than_the_file_holds(world):
    wanted = world.files[0]
    with embedded_server(world, overlong_bytes=200_000) as server:
        ftp = ftps_login(world, server.port, "magrathea", world.password)
        received = io.BytesIO()
        try:
            ftp.retrbinary("RETR cdr/%s" % os.path.basename(wanted), received.write)
            size = ftp.size("cdr/%s" % os.path.basename(wanted))
        finally:
            ftp.close()
    assert size == os.path.getsize(wanted)
    assert received.getvalue()[:size] == read_bytes(wanted)
    assert len(received.getvalue()) == size + 200_000


@pytest.mark.parametrize("mlsd", [True, False])
def test_vanishing_file_is_listed_but_gone_when_fetched(world, mlsd):
    with embedded_server(world, vanishing_names=("MAG000001_gone.zip",), mlsd=mlsd) as server:
        ftp = ftps_login(world, server.port, "magrathea", world.password)
        try:
            features = ftp.sendcmd("FEAT")
            listing = []
            ftp.retrlines("LIST cdr", listing.append)
            with pytest.raises(ftplib.error_perm, match="^550"):
                ftp.retrbinary("RETR cdr/MAG000001_gone.zip", io.BytesIO().write)
            with pytest.raises(ftplib.error_perm, match="^550"):
                ftp.size("cdr/MAG000001_gone.zip")
        finally:
            ftp.close()
    assert any(line.endswith(" MAG000001_gone.zip") for line in listing)
    assert ("MLST" in features) is mlsd


def test_listing_padding_streams_many_entries(world):
    with embedded_server(world, listing_padding=5000, raw_listing_lines=("odd line",)) as server:
        ftp = ftps_login(world, server.port, "magrathea", world.password)
        try:
            names = [name for name, facts in ftp.mlsd("cdr")]
        finally:
            ftp.close()
    assert len(names) == len(world.files) + 5000 + 1
    assert names[-2:] == ["padding-00004999.txt", "line"]  # ftplib splits "odd line" at its first space


def test_data_connections_may_present_another_certificate(world, tmp_path):
    other = write_server_pki(str(tmp_path / "data-pki"))
    with embedded_server(world, data_certfile=other["cert_file"], data_keyfile=other["key_file"]) as server:
        context = verifying_context(world)
        context.load_verify_locations(other["ca_file"])
        ftp = ftps_login(world, server.port, "magrathea", world.password, context=context)
        try:
            control = ftp.sock.getpeercert(binary_form=True)
            with ftp.transfercmd("NLST cdr") as conn:
                data = conn.getpeercert(binary_form=True)
                while conn.recv(8192):
                    pass
            ftp.voidresp()
        finally:
            ftp.close()
    assert control == read_pem_der(world.pki["cert_file"]) and data == read_pem_der(other["cert_file"])


def read_pem_der(path):
    with open(path, encoding="ascii") as handle:
        return ssl.PEM_cert_to_DER_cert(handle.read())


def test_events_count_connections_refusals_and_logins(world, tmp_path):
    log = tmp_path / "ftps.log"
    with embedded_server(world, max_connections=1, log_path=str(log)) as server:
        held = ftps_login(world, server.port, "magrathea", world.password)
        try:
            with pytest.raises(ftplib.error_temp, match="^421"):
                ftplib.FTP_TLS(context=verifying_context(world), timeout=10).connect("localhost", server.port)
        finally:
            held.close()
        events = server.events
        assert (events.connections, events.refused, events.logins) == (1, 1, 1)
        assert events.commands["USER"] == 1 and events.commands["PASS"] == 1 and events.commands["AUTH"] == 1
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [entry["event"] for entry in entries if entry["event"] != "close"] == ["connect", "login", "refused"]
    assert entries[1]["user"] == "magrathea" and entries[0]["open"] == 1


def test_tls_max_version_caps_at_tls_1_2(world):
    with embedded_server(world, tls_max_version="1.2") as server:
        ftp = ftps_login(world, server.port, "magrathea", world.password)
        try:
            assert ftp.sock.version() == "TLSv1.2"
            with ftp.transfercmd("NLST cdr") as conn:
                assert conn.version() == "TLSv1.2"
                while conn.recv(8192):
                    pass
                conn.unwrap()
            ftp.voidresp()
        finally:
            ftp.close()
        strict = verifying_context(world)
        strict.minimum_version = ssl.TLSVersion.TLSv1_3
        ftp = ftplib.FTP_TLS(context=strict, timeout=10)
        ftp.connect("localhost", server.port)
        try:
            with pytest.raises(ssl.SSLError):
                ftp.auth()
        finally:
            ftp.close()


def test_server_without_tls_does_not_offer_auth_tls(world):
    with EmbeddedFtpsServer(username="magrathea", password=world.password, root=world.root, tls_required=False) as server:
        ftp = ftplib.FTP(timeout=10)
        ftp.connect("localhost", server.port)
        try:
            with pytest.raises(ftplib.error_perm) as refused:
                ftp.sendcmd("AUTH TLS")
            assert str(refused.value).startswith("500")
            ftp.login("magrathea", world.password)
            assert os.path.basename(world.files[0]) in [os.path.basename(name) for name in ftp.nlst("cdr")]
        finally:
            ftp.close()


def test_two_servers_keep_their_own_settings(world):
    with embedded_server(world, tls_max_version="1.2") as capped, embedded_server(world) as default:
        versions = []
        for port in (capped.port, default.port):
            ftp = ftps_login(world, port, "magrathea", world.password)
            versions.append(ftp.sock.version())
            ftp.close()
    assert versions == ["TLSv1.2", "TLSv1.3"]


def test_stop_closes_the_listener_and_open_sessions(world):
    server = embedded_server(world).start()
    held = ftps_login(world, server.port, "magrathea", world.password)
    server.stop()
    try:
        with pytest.raises((EOFError, OSError)):
            held.voidcmd("NOOP")
    finally:
        held.close()
    with pytest.raises(OSError):
        ftplib.FTP(timeout=5).connect("localhost", server.port)


# --- CDR files -------------------------------------------------------------------------------------------------------


def read_csv(path):
    with zipfile.ZipFile(path) as archive:
        (member,) = archive.infolist()
        return member, archive.read(member).decode("ascii")


def test_cdr_files_are_deterministic_daily_zips(tmp_path):
    first = generate_cdr_files(tmp_path / "a", count=3, start="2024-02-28")
    second = generate_cdr_files(tmp_path / "b", count=3, start="2024-02-28")
    assert [os.path.basename(path) for path in first] == ["MAG000001_20240228.zip", "MAG000001_20240229.zip", "MAG000001_20240301.zip"]
    assert [read_bytes(path) for path in first] == [read_bytes(path) for path in second]
    member, text = read_csv(first[1])
    assert member.filename == "MAG000001_20240229.csv"
    lines = text.split("\r\n")
    assert lines[0] == ",".join(KNOWN_COLUMNS)
    assert len(lines) == 1 + 20 + 1  # header, rows, empty string after the last CRLF
    assert all(line.startswith("2024-02-29,") for line in lines[1:-1])
    assert os.path.getmtime(first[1]) == datetime.datetime(2024, 3, 1, 1, 0, tzinfo=datetime.timezone.utc).timestamp()


def test_cdr_seed_account_and_date_change_the_content(tmp_path):
    base = generate_cdr_files(tmp_path / "a", count=1, start="2024-01-01")[0]
    for name, kwargs in {"seed": {"seed": "other"}, "account": {"account": "MAG000002"}, "date": {"start": "2024-01-02"}}.items():
        other = generate_cdr_files(tmp_path / name, count=1, name_format="x.zip", **{"start": "2024-01-01", **kwargs})[0]
        assert read_csv(other)[1] != read_csv(base)[1], name


def test_cdr_columns_headers_and_names_are_configurable(tmp_path):
    (path,) = generate_cdr_files(
        tmp_path, count=1, start="2024-05-01", account="MAG123456", name_format="cdr-{date:%Y-%m-%d}-{account}.zip",
        columns=("bnumber", "calldate", "duration"), headers={"bnumber": "Number"}, rows=5,
    )
    assert os.path.basename(path) == "cdr-2024-05-01-MAG123456.zip"
    lines = read_csv(path)[1].split("\r\n")
    assert lines[0] == "Number,calldate,duration"
    assert all(line.split(",")[1] == "2024-05-01" for line in lines[1:-1])
    with pytest.raises(ValueError, match="unknown CDR columns colour"):
        generate_cdr_files(tmp_path, count=1, columns=("calldate", "colour"))


def test_cdr_size_pads_with_stored_calls(tmp_path):
    paths = generate_cdr_files(tmp_path, count=3, size=100 * 1024)
    for path in paths:
        assert abs(os.path.getsize(path) - 100 * 1024) < 300
        member, text = read_csv(path)
        assert member.compress_type == zipfile.ZIP_STORED
        assert len(text.split("\r\n")) > 500


def utc(*fields):
    return datetime.datetime(*fields, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("now, newest", [
    # Yesterday's file is out at 01:00 UTC; by 02:00 it has been out an hour.
    (utc(2024, 3, 2, 2, 0), "20240301"),
    (utc(2024, 3, 2, 23, 59), "20240301"),
    # Between midnight and 02:00 the newest file is the one published at 01:00 the day before: no file is minutes old,
    # so a sync and its rerun agree whatever the hour the sandbox starts (a fresh file needs an MDTM on the rerun).
    (utc(2024, 3, 2, 0, 30), "20240229"),
    (utc(2024, 3, 2, 1, 30), "20240229"),
])
def test_cdr_default_files_end_with_the_newest_settled_one(tmp_path, now, newest):
    paths = generate_cdr_files(tmp_path, count=2, now=now.timestamp())
    assert os.path.basename(paths[-1]) == "MAG000001_%s.zip" % newest
    assert max(os.path.getmtime(path) for path in paths) <= now.timestamp() - 3600


def test_cdr_default_files_follow_the_clock(tmp_path):
    def newest():
        settled = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
        return "MAG000001_%s.zip" % (settled.date() - datetime.timedelta(days=1)).strftime("%Y%m%d")

    before = newest()
    paths = generate_cdr_files(tmp_path, count=2)
    assert os.path.basename(paths[-1]) in {before, newest()}
