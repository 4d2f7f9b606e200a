"""``python -m klaviyo_consent.receipts verify RECEIPT.json [--public-key KEY]``: no Django."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from klaviyo_consent.receipts import ReceiptError, verify_receipt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m klaviyo_consent.receipts")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="Verify a consent receipt offline.")
    verify.add_argument("receipt", help="A receipt JSON file, or - for standard input.")
    verify.add_argument(
        "--public-key",
        help="The ledger's base64 Ed25519 public key, or a file holding it, obtained "
        "independently of the receipt (docs/receipts.md).",
    )
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.receipt == "-" else Path(args.receipt).read_text("utf-8")
        receipt = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"invalid: cannot read the receipt: {exc}", file=sys.stderr)
        return 2
    key = args.public_key
    if key and Path(key).is_file():
        key = Path(key).read_text("utf-8").strip()
    if isinstance(receipt, list):
        receipts = receipt
    elif isinstance(receipt, dict):
        receipts = receipt.get("receipts", [receipt])
    else:
        receipts = None
    if not isinstance(receipts, list) or not receipts:
        print("invalid: content: no receipt to verify (give one or a list)", file=sys.stderr)
        return 1
    try:
        for number, one in enumerate(receipts, 1):
            if not isinstance(one, dict):
                raise ReceiptError("content", f"receipt {number} is not an object")
            verify_receipt(one, key)
    except ReceiptError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    if not key:
        print("note: signature checked against the receipt's own public key", file=sys.stderr)
    print("valid" if len(receipts) == 1 else f"valid: {len(receipts)} receipts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
