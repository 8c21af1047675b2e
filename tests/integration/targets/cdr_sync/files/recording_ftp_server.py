# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An FTP server for one connection that records every byte the client sends (decrypted after AUTH TLS).

    recording_ftp_server.py --cert C --key K --port-file P --record R [--no-tls]

Writes the port it listens on to P, serves one client, writes what it received
to R (as text, backslash-escaped) and exits. With --no-tls it answers AUTH TLS
with 500 like a plain FTP server, and 331/230 to USER/PASS, so a client that
falls back to clear text would show its password in R.
"""

import argparse
import os
import socket
import ssl
import sys


def read_line(sock, record):
    line = b''
    while not line.endswith(b'\n'):
        data = sock.recv(1)
        if not data:
            break
        line += data
    record.append(line)
    return line


def answer(line):
    if line.startswith(b'USER'):
        return b'331 Password required.\r\n'
    if line.startswith(b'AUTH'):
        return b'500 Unknown command.\r\n'
    return b'230 OK.\r\n'


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cert', required=True)
    parser.add_argument('--key', required=True)
    parser.add_argument('--port-file', required=True)
    parser.add_argument('--record', required=True)
    parser.add_argument('--no-tls', action='store_true')
    parser.add_argument('--timeout', type=float, default=60)
    args = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    listener = socket.create_server(('127.0.0.1', 0))
    listener.settimeout(args.timeout)
    with open(args.port_file + '.tmp', 'w', encoding='ascii') as handle:
        handle.write('%d\n' % listener.getsockname()[1])
    os.rename(args.port_file + '.tmp', args.port_file)
    record = []
    try:
        raw, dummy = listener.accept()
        raw.settimeout(10)
        raw.sendall(b'220 Recording FTP server ready.\r\n')
        if args.no_tls:
            while True:
                line = read_line(raw, record)
                if not line:
                    break
                raw.sendall(answer(line))
        else:
            read_line(raw, record)
            raw.sendall(b'234 Proceed with negotiation.\r\n')
            with context.wrap_socket(raw, server_side=True) as tls:
                while True:
                    line = read_line(tls, record)
                    if not line:
                        break
                    tls.sendall(answer(line) if not line.startswith(b'AUTH') else b'230 OK.\r\n')
    except (OSError, ssl.SSLError) as exc:
        record.append(('# connection ended: %s\n' % type(exc).__name__).encode())
    with open(args.record, 'w', encoding='ascii') as handle:
        handle.write(b''.join(record).decode('ascii', 'backslashreplace'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
