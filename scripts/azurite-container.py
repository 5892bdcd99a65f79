#!/usr/bin/env python3
"""Create a blob container in Azurite (or any Azure Blob endpoint) with a SharedKey-signed request.

Standard library only. object_store has no create-container call, so the test harness makes one here:

    azurite-container.py --endpoint http://127.0.0.1:PORT/devstoreaccount1 --container NAME [--print-url]

The account defaults to Azurite's devstoreaccount1 and its published development key. With --print-url, prints the
bcv store URL of the container (az://NAME?account=..&access_key=..&endpoint=..). An existing container is not an
error. Exit status 0 on success, 1 on failure (with the server's answer on stderr).
"""

import argparse
import base64
import hashlib
import hmac
import sys
import urllib.error
import urllib.parse
import urllib.request
from email.utils import formatdate

# Azurite's well-known development account and key (published in Microsoft's Azurite documentation).
EMULATOR_ACCOUNT = "devstoreaccount1"
EMULATOR_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
API_VERSION = "2021-08-06"


def shared_key(account, key, verb, url, headers):
    """The SharedKey Authorization header value for a request without a body."""
    parsed = urllib.parse.urlsplit(url)
    ms_headers = sorted((k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-ms-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in ms_headers)
    resource = f"/{account}{parsed.path}"
    query = urllib.parse.parse_qs(parsed.query)
    for name in sorted(query, key=str.lower):
        resource += f"\n{name.lower()}:{','.join(sorted(query[name]))}"
    # VERB, Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-Modified-Since, If-Match, If-None-Match,
    # If-Unmodified-Since, Range: all empty here.
    string_to_sign = verb + "\n" * 12 + canonical_headers + resource
    digest = hmac.new(base64.b64decode(key), string_to_sign.encode("utf-8"), hashlib.sha256).digest()
    return f"SharedKey {account}:{base64.b64encode(digest).decode()}"


def create_container(endpoint, account, key, container):
    url = f"{endpoint.rstrip('/')}/{container}?restype=container"
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
    headers["Authorization"] = shared_key(account, key, "PUT", url, headers)
    # No body, so urllib adds no Content-Type (which would have to be signed).
    request = urllib.request.Request(url, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        if err.code == 409:  # ContainerAlreadyExists
            return err.code
        body = err.read().decode("utf-8", "replace")
        print(f"azurite-container: PUT {url} -> {err.code} {err.reason}\n{body}", file=sys.stderr)
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="account URL, e.g. http://127.0.0.1:10000/devstoreaccount1")
    parser.add_argument("--container", required=True)
    parser.add_argument("--account", default=EMULATOR_ACCOUNT)
    parser.add_argument("--key", default=EMULATOR_KEY, help="base64 account key (default: Azurite's)")
    parser.add_argument("--print-url", action="store_true", help="print the bcv az:// URL of the container")
    args = parser.parse_args()
    try:
        status = create_container(args.endpoint, args.account, args.key, args.container)
    except OSError as err:
        print(f"azurite-container: cannot reach {args.endpoint}: {err}", file=sys.stderr)
        return 1
    if status is None:
        return 1
    if args.print_url:
        query = urllib.parse.urlencode({"account": args.account, "access_key": args.key, "endpoint": args.endpoint})
        print(f"az://{args.container}?{query}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
