"""query.py — the subset of Drive's `q` search language the emulator
understands: parsing into a small tree, evaluating it against a file, and
two helpers the list call uses (candidate parents for a fast path, and
whether a name clause is present, for the name-query visibility delay).

Supported terms: 'ID' in parents (also owners/writers/readers),
name = / != / contains, mimeType = / != / contains, fullText contains,
trashed / starred = / != true|false, modifiedTime / createdTime <op> 'time',
appProperties / properties has { key='k' and value='v' }; and/or/not and
parentheses. Strings take \\' and \\\\ escapes (Drive's rules); any other
escape is an error, which catches clients that forget to escape."""

import re

from .util import parse_time, invalid_param

KEYWORDS = {"and", "or", "not", "in", "has", "contains", "true", "false"}
_WS = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OP = re.compile(r"!=|<=|>=|=|<|>")


def _err(msg="Invalid Value"):
    return invalid_param("q", msg)


def tokenize(text):
    toks = []
    i, n = 0, len(text)
    while i < n:
        m = _WS.match(text, i)
        if m:
            i = m.end()
            continue
        c = text[i]
        if c in "'\"":
            quote = c
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise _err()
                c = text[i]
                if c == "\\":
                    if i + 1 >= n or text[i + 1] not in "\\'\"":
                        raise _err()
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if c == quote:
                    i += 1
                    break
                buf.append(c)
                i += 1
            toks.append(("str", "".join(buf)))
            continue
        if c in "(){}":
            toks.append((c, c))
            i += 1
            continue
        m = _OP.match(text, i)
        if m:
            toks.append(("op", m.group(0)))
            i = m.end()
            continue
        m = _WORD.match(text, i)
        if m:
            w = m.group(0)
            if w.lower() in KEYWORDS:
                toks.append(("kw", w.lower()))
            else:
                toks.append(("word", w))
            i = m.end()
            continue
        raise _err()
    return toks


class _Parser:
    def __init__(self, toks):
        self.toks = toks
        self.i = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, kind=None, value=None):
        t = self.peek()
        if t[0] is None or (kind and t[0] != kind) or (value is not None and t[1] != value):
            raise _err()
        self.i += 1
        return t

    def parse(self):
        node = self.parse_or()
        if self.i != len(self.toks):
            raise _err()
        return node

    def parse_or(self):
        items = [self.parse_and()]
        while self.peek() == ("kw", "or"):
            self.i += 1
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else ("or", items)

    def parse_and(self):
        items = [self.parse_not()]
        while self.peek() == ("kw", "and"):
            self.i += 1
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else ("and", items)

    def parse_not(self):
        if self.peek() == ("kw", "not"):
            self.i += 1
            return ("not", self.parse_not())
        return self.parse_primary()

    def parse_primary(self):
        kind, val = self.peek()
        if kind == "(":
            self.i += 1
            node = self.parse_or()
            self.take(")")
            return node
        if kind == "str":
            self.i += 1
            self.take("kw", "in")
            coll = self.take("word")[1]
            if coll not in ("parents", "owners", "writers", "readers"):
                raise _err()
            return ("in", coll, val)
        if kind != "word":
            raise _err()
        field = val
        self.i += 1
        if field in ("appProperties", "properties"):
            self.take("kw", "has")
            self.take("{")
            w = self.take("word")[1]
            if w != "key":
                raise _err()
            self.take("op", "=")
            key = self.take("str")[1]
            self.take("kw", "and")
            w = self.take("word")[1]
            if w != "value":
                raise _err()
            self.take("op", "=")
            value = self.take("str")[1]
            self.take("}")
            return ("has", field, key, value)
        opk, op = self.peek()
        if opk == "kw" and op == "contains":
            self.i += 1
        elif opk == "op":
            self.i += 1
        else:
            raise _err()
        vk, v = self.peek()
        self.i += 1
        if field in ("name", "mimeType", "fullText"):
            if vk != "str" or op not in ("=", "!=", "contains"):
                raise _err()
            if field == "fullText" and op != "contains":
                raise _err()
            return ("cmp", field, op, v)
        if field in ("trashed", "starred", "sharedWithMe"):
            if vk != "kw" or v not in ("true", "false") or op not in ("=", "!="):
                raise _err()
            return ("cmp", field, op, v == "true")
        if field in ("modifiedTime", "createdTime", "viewedByMeTime"):
            if vk != "str" or op == "contains":
                raise _err()
            try:
                ms = parse_time(v)
            except ValueError:
                raise _err()
            return ("cmp", field, op, ms)
        raise _err()


def parse_query(text):
    """Parse q; None for an empty query (matches everything)."""
    if text is None or text.strip() == "":
        return None
    return _Parser(tokenize(text)).parse()


def _name_contains(name, needle):
    # Drive's `name contains` is a prefix match on words ("HelloWorld"
    # contains 'Hello' but not 'World'); case-insensitive.
    name = name.casefold()
    needle = needle.casefold()
    if needle == "":
        return True
    start = 0
    while True:
        i = name.find(needle, start)
        if i < 0:
            return False
        if i == 0 or not name[i - 1].isalnum():
            return True
        start = i + 1


def _cmp(a, op, b):
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    return False


def evaluate(node, view):
    """view: an object with name, mimeType, trashed, starred, modified_ms,
    created_ms, viewed_ms, parents (ids), props(field) -> dict, owned (bool),
    root_id, and user_email."""
    if node is None:
        return True
    t = node[0]
    if t == "and":
        return all(evaluate(n, view) for n in node[1])
    if t == "or":
        return any(evaluate(n, view) for n in node[1])
    if t == "not":
        return not evaluate(node[1], view)
    if t == "in":
        coll, val = node[1], node[2]
        if coll == "parents":
            if val == "root":
                val = view.root_id
            return val in view.parents
        return view.owned and val in ("me", view.user_email)
    if t == "has":
        return view.props(node[1]).get(node[2]) == node[3]
    if t == "cmp":
        field, op, val = node[1], node[2], node[3]
        if field == "name":
            if op == "contains":
                return _name_contains(view.name, val)
            return _cmp(view.name.casefold(), op, val.casefold())
        if field == "mimeType":
            if op == "contains":
                return val in view.mimeType
            return _cmp(view.mimeType, op, val)
        if field == "fullText":
            return val.casefold() in view.name.casefold()
        if field == "trashed":
            return _cmp(view.trashed, op, val)
        if field == "starred":
            return _cmp(view.starred, op, val)
        if field == "sharedWithMe":
            return _cmp(False, op, val)
        if field == "modifiedTime":
            return _cmp(view.modified_ms, op, val)
        if field == "createdTime":
            return _cmp(view.created_ms, op, val)
        if field == "viewedByMeTime":
            return _cmp(view.modified_ms, op, val)
    return False


def has_name_clause(node):
    if node is None:
        return False
    t = node[0]
    if t in ("and", "or"):
        return any(has_name_clause(n) for n in node[1])
    if t == "not":
        return has_name_clause(node[1])
    return t == "cmp" and node[1] in ("name", "fullText")


def candidate_parents(node):
    """A set of parent ids every match must have one of, or None when the
    query does not restrict parents (then all files are scanned)."""
    if node is None:
        return None
    t = node[0]
    if t == "in" and node[1] == "parents":
        return {node[2]}
    if t == "and":
        best = None
        for n in node[1]:
            c = candidate_parents(n)
            if c is not None and (best is None or len(c) < len(best)):
                best = c
        return best
    if t == "or":
        out = set()
        for n in node[1]:
            c = candidate_parents(n)
            if c is None:
                return None
            out |= c
        return out
    return None
