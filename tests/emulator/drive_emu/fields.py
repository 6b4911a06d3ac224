"""fields.py — Drive's partial-response `fields=` masks: parsing
("nextPageToken,files(id,name)", "files/id", "*") and projecting a JSON
object through a mask. Unknown field names select nothing (Drive would
reject some; being lenient keeps real clients such as rclone working)."""

import re

from .util import DriveError

_TOKEN = re.compile(r"\s*([A-Za-z0-9_*.@$-]+|[(),/])")


def _bad():
    return DriveError(400, "invalidParameter", "Invalid field selection", "fields", "parameter")


def parse_fields(text):
    """Return a mask: dict name -> sub-mask, where a sub-mask of None means
    the whole value. None (no fields parameter) is returned for empty text."""
    if text is None or text.strip() == "":
        return None
    toks = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise _bad()
        toks.append(m.group(1))
        pos = m.end()
    mask, i = _parse_list(toks, 0)
    if i != len(toks):
        raise _bad()
    return mask


def _merge(mask, path, sub):
    for name in path[:-1]:
        cur = mask.get(name, {})
        if cur is None:  # already selecting the whole value
            return
        mask[name] = cur
        mask = cur
    last = path[-1]
    if last in mask:
        old = mask[last]
        if old is None or sub is None:
            mask[last] = None
        else:
            for k, v in sub.items():
                _merge(old, [k], v)
    else:
        mask[last] = sub


def _parse_list(toks, i):
    mask = {}
    while True:
        if i >= len(toks) or toks[i] in "(),/":
            raise _bad()
        path = [toks[i]]
        i += 1
        while i < len(toks) and toks[i] == "/":
            if i + 1 >= len(toks) or toks[i + 1] in "(),/":
                raise _bad()
            path.append(toks[i + 1])
            i += 2
        sub = None
        if i < len(toks) and toks[i] == "(":
            sub, i = _parse_list(toks, i + 1)
            if i >= len(toks) or toks[i] != ")":
                raise _bad()
            i += 1
        _merge(mask, path, sub)
        if i < len(toks) and toks[i] == ",":
            i += 1
            continue
        return mask, i


def project(obj, mask):
    if mask is None:
        return obj
    if isinstance(obj, list):
        return [project(o, mask) for o in obj]
    if not isinstance(obj, dict):
        return obj
    if "*" in mask:
        return obj
    out = {}
    for k, sub in mask.items():
        if k in obj:
            out[k] = project(obj[k], sub)
    return out
