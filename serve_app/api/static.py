"""The dashboard's files (``serve_app/api/static/``): served from the package, no build step.

Only files that exist when the module loads can be served (a fixed table, so no request
path ever reaches the file system); third-party files sit in ``vendor/`` with their
licences.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Response

from serve_app.api.schemas import ApiError

ROOT = Path(__file__).with_name("static")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
FILES = {
    path.relative_to(ROOT).as_posix(): path
    for path in sorted(ROOT.rglob("*"))
    if path.is_file() and path.suffix in MEDIA_TYPES
}


def static_response(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        raise ApiError(404, "path", f"no file {name!r}")
    # Revalidate the page itself; the vendored library changes only with a release.
    cache = "max-age=86400" if name.startswith("vendor/") else "no-cache"
    return Response(
        path.read_bytes(), media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": cache}
    )
