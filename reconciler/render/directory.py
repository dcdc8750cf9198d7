"""A path of plain manifests, read as Argo CD's directory source reads it:
`recurse`, `include` / `exclude` globs matched against the path relative to
the source path (`*` crosses '/', `{a,b}` alternatives), .yaml/.yml/.json
files, multi-document files, non-manifest YAML skipped."""

from __future__ import annotations

import functools
import re

from reconciler.documents import MANIFEST_SUFFIXES, parse_documents
from reconciler.errors import RenderError
from reconciler.model import App, Origin, Source
from reconciler.render.objects import Rendered, check_count, objects_from
from reconciler.tree import Tree, clean_path


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for an Argo CD (gobwas) glob without separators, as Argo CD compiles
    include/exclude: `*` and `**` match anything, `?` one character, `[..]` / `[!..]`
    classes, `{a,b}` alternatives (nestable), `\\x` a literal x."""
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise RenderError(f"glob {pattern!r} has an unclosed '{{'")
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as exc:
        raise RenderError(f"glob {pattern!r} is invalid: {exc}") from None


def selected(relative: str, include: str, exclude: str) -> bool:
    if exclude and glob_regex(exclude).match(relative):
        return False
    return not include or glob_regex(include).match(relative) is not None


def render_directory(
    app: App, source: Source, tree: Tree, max_file_bytes: int, max_objects: int
) -> list[Rendered]:
    options = source.directory
    base = clean_path(source.path or "")
    recurse = options.recurse if options else False
    include = options.include if options else ""
    exclude = options.exclude if options else ""
    out: list[Rendered] = []
    for path in tree.files(base, recurse):
        relative = path[len(base) + 1 :] if base else path
        if not path.endswith(MANIFEST_SUFFIXES) or not selected(relative, include, exclude):
            continue
        docs = parse_documents(read_limited(tree, path, max_file_bytes), path)
        out.extend(objects_from(docs, path, Origin(tree.repo, tree.commit, app.name, path)))
        check_count(len(out), max_objects, path)
    return out


def check_size(tree: Tree, path: str, max_file_bytes: int) -> None:
    """Refuse a file over the size limit before anything reads it."""
    size = tree.size(path)
    if size > max_file_bytes:
        raise RenderError(f"{path}: {size} bytes is over the {max_file_bytes}-byte file limit")


def read_limited(tree: Tree, path: str, max_file_bytes: int) -> bytes:
    check_size(tree, path, max_file_bytes)
    return tree.read(path)
