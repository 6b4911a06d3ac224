"""drive_emu — a local stand-in for the Google Drive v3 API (see ../README.md).

Modules: util (ids, times, errors), fields (fields= masks), query (q language),
store (metadata journal, content versions, changes feed), uploads (resumable
sessions, streaming bodies to disk with md5), auth (OAuth token endpoint, RS256
JWTs), faults (fault injection, throttles, stats), api (Drive endpoints),
control (/_emu endpoints), httpd (HTTP/1.1 server), cli (command line).
"""
