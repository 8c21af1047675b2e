# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A hostile REST API over HTTPS, and an HTTP CONNECT proxy, on loopback, for balance_info's failure cases.

    hostile_rest.py --cert C --key K --ports P --record R --stop S [--lifetime SECONDS]

Writes {"rest": port, "proxy": port} to P once both listen, and one JSON line per request to R; exits once the
file S exists (or after the lifetime). Each JSON line of R is
{"rest": account, "authorization": bool} or {"connect": "host:port"}. The account asked for picks the answer:

    ECHO401    401 whose JSON error repeats the Authorization header and the password
    ECHO500    500 whose text body, and Content-Type, repeat them
    REDIRECT   302 to a Location that carries the Authorization header
    BUSY       503 with Retry-After: 0, always
    SLOW       a balance sent one byte every half second
    BOMB       a gzip body that unpacks to 64 MiB
    HUGE       funds 1e5000 (a JSON number)
    DIGITS     funds in Arabic-Indic digits
    NOTFOUND   404 Not found
    FORBIDDEN  403 Forbidden
    anything else: the balance {"funds": "125.50", "promofunds": "10.00"}

The proxy tunnels to any host and port on loopback and records the CONNECT target; it ignores Proxy-Authorization.
"""

import argparse
import base64
import gzip
import json
import os
import socket
import ssl
import threading
import time

BALANCE = b'{"funds": "125.50", "promofunds": "10.00"}'


class Recorder:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def __call__(self, **entry):
        with self.lock, open(self.path, 'a', encoding='utf-8') as handle:
            handle.write(json.dumps(entry) + '\n')


def head(status, headers):
    lines = ['HTTP/1.1 %d Hostile' % status, 'Connection: close'] + ['%s: %s' % item for item in headers.items()]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


def reply(status, body, **headers):
    headers.setdefault('Content-Type', 'application/json')
    headers['Content-Length'] = str(len(body))
    return head(status, headers) + body


def answer(tls, account, authorization):
    """Send what ``account`` asks for."""
    password = ''
    if authorization.startswith('Basic '):
        password = base64.b64decode(authorization[6:]).decode('utf-8', 'replace').partition(':')[2]
    echo = 'Authorization: %s (password %s)' % (authorization, password)
    if account == 'ECHO401':
        tls.sendall(reply(401, json.dumps({'error': 'Wrong username, password or account: ' + echo}).encode()))
    elif account == 'ECHO500':
        tls.sendall(reply(500, ('<html>Internal error\n%s</html>' % echo).encode(), **{'Content-Type': 'text/html; ' + authorization}))
    elif account == 'REDIRECT':
        tls.sendall(reply(302, b'', Location='https://elsewhere.example/login?%s' % authorization.replace(' ', '+')))
    elif account == 'BUSY':
        tls.sendall(reply(503, b'{"error": "Service temporarily unavailable"}', **{'Retry-After': '0'}))
    elif account == 'SLOW':
        body = BALANCE + b' ' * 200
        tls.sendall(head(200, {'Content-Type': 'application/json', 'Content-Length': str(len(body))}))
        for index in range(len(body)):
            tls.sendall(body[index:index + 1])
            time.sleep(0.5)
    elif account == 'BOMB':
        tls.sendall(reply(200, gzip.compress(BALANCE + b' ' * (64 * 1024 * 1024), 1), **{'Content-Encoding': 'gzip'}))
    elif account == 'HUGE':
        tls.sendall(reply(200, b'{"funds": 1e5000, "promofunds": 0}'))
    elif account == 'DIGITS':
        tls.sendall(reply(200, json.dumps({'funds': '\u0661\u0662\u0663', 'promofunds': '0'}).encode()))
    elif account == 'NOTFOUND':
        tls.sendall(reply(404, b'{"error": "Not found"}'))
    elif account == 'FORBIDDEN':
        tls.sendall(reply(403, b'{"error": "Forbidden"}'))
    else:
        tls.sendall(reply(200, BALANCE))


def read_head(sock):
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode('latin-1')


def serve_rest(raw, context, record):
    raw.settimeout(30)
    try:
        with context.wrap_socket(raw, server_side=True) as tls:
            request = read_head(tls)
            if not request:
                return
            target = request.split(' ', 2)[1]
            authorization = ''
            for line in request.split('\r\n')[1:]:
                name, dummy, value = line.partition(':')
                if name.strip().lower() == 'authorization':
                    authorization = value.strip()
            account = target.rstrip('/').rsplit('/', 1)[-1]
            record(rest=account, authorization=bool(authorization))
            answer(tls, account, authorization)
    except (OSError, ssl.SSLError):
        pass


def relay(source, sink):
    try:
        for data in iter(lambda: source.recv(65536), b''):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve_proxy(client, record):
    client.settimeout(60)
    try:
        request = read_head(client)
        target = request.split(' ', 2)[1]
        record(connect=target)
        host, port = target.rsplit(':', 1)
        with socket.create_connection((host, int(port)), timeout=60) as upstream:
            client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
            back = threading.Thread(target=relay, args=(upstream, client), daemon=True)
            back.start()
            relay(client, upstream)
            back.join(60)
    except (OSError, IndexError, ValueError):
        pass
    finally:
        client.close()


def accept(listener, handler, *args):
    while True:
        try:
            sock, dummy = listener.accept()
        except OSError:
            return
        threading.Thread(target=handler, args=(sock,) + args, daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cert', required=True)
    parser.add_argument('--key', required=True)
    parser.add_argument('--ports', required=True)
    parser.add_argument('--record', required=True)
    parser.add_argument('--stop', required=True)
    parser.add_argument('--lifetime', type=float, default=600)
    args = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    record = Recorder(args.record)
    rest = socket.create_server(('127.0.0.1', 0))
    proxy = socket.create_server(('127.0.0.1', 0))
    threading.Thread(target=accept, args=(rest, serve_rest, context, record), daemon=True).start()
    threading.Thread(target=accept, args=(proxy, serve_proxy, record), daemon=True).start()
    with open(args.ports + '.tmp', 'w', encoding='ascii') as handle:
        json.dump({'rest': rest.getsockname()[1], 'proxy': proxy.getsockname()[1]}, handle)
    os.rename(args.ports + '.tmp', args.ports)
    end = time.monotonic() + args.lifetime
    while time.monotonic() < end and not os.path.exists(args.stop):
        time.sleep(0.2)


if __name__ == '__main__':
    main()
