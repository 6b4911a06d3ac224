"""httpd_types.py — the response value handlers return (bytes or a file
range) and helpers to build JSON and Drive-error responses. Kept apart from
httpd.py so api.py does not import the server."""

import json


class Response:
    __slots__ = ("status", "reason", "headers", "body", "file_path", "offset", "length",
                 "content_type")

    def __init__(self, status, body=b"", headers=None, content_type=None, file_path=None,
                 offset=0, length=0, reason=None):
        self.status = status
        self.reason = reason
        self.headers = list(headers or [])
        self.body = body
        self.content_type = content_type
        self.file_path = file_path   # serve [offset, offset+length) of this file
        self.offset = offset
        self.length = length if file_path is not None else len(body)


def json_response(status, obj, headers=None):
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(status, body, headers, "application/json; charset=UTF-8")


def error_response(err):
    headers = list(err.headers)
    if err.status == 401:
        headers.append(("WWW-Authenticate",
                        'Bearer realm="https://accounts.google.com/", error="invalid_token"'))
    return json_response(err.status, err.body(), headers)
