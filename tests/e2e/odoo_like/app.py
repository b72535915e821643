#!/usr/bin/env python3
"""A small WSGI application that routes like Odoo, on werkzeug (Odoo's own HTTP stack).

- Database per host, like Odoo's `dbfilter = ^%d$`: the first label of the Host
  (`acme.erp.test` -> database `acme`); a host without a database gets 404.
- `proxy_mode`: werkzeug's ProxyFix trusts one proxy's X-Forwarded-For/-Proto/-Host.
- `/web/login` (form, session cookie `session_id`), `/web` (the web client, signed in
  only), `/web/static/...` (assets), JSON-RPC at `/web/dataset/call_kw/<model>/<method>`
  and the JSON-2 API at `/json/2/<model>/<method>`.

Odoo itself is too heavy to install for a test (PostgreSQL, hundreds of modules); this
app reproduces the URL layout and host handling that matter to a gateway in front.

Usage: app.py PORT [DATABASE ...]
"""
import json
import secrets
import sys

from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

USERS = {"admin": "admin"}
MODELS = {
    "sale.order": [{"id": 1, "name": "S00001", "amount_total": 120.0}],
    "mrp.production": [{"id": 7, "name": "WH/MO/00007", "product_qty": 40.0}],
    "hr.employee": [{"id": 3, "name": "Peter Gibbons"}],
}
STATIC = {"web/static/src/css/web.css": ("text/css", b"body { margin: 0; }\n")}

URLS = Map(
    [
        Rule("/", endpoint="root"),
        Rule("/web", endpoint="webclient"),
        Rule("/web/login", endpoint="login", methods=["GET", "POST"]),
        Rule("/web/session/logout", endpoint="logout"),
        Rule("/web/static/<path:path>", endpoint="static"),
        Rule("/web/dataset/call_kw/<model>/<method>", endpoint="call_kw", methods=["POST"]),
        Rule("/json/2/<model>/<method>", endpoint="json2", methods=["POST"]),
    ]
)


class OdooLike:
    def __init__(self, databases):
        self.databases = set(databases)
        self.sessions = {}  # session id -> (database, login)

    def __call__(self, environ, start_response):
        request = Request(environ)
        database = request.host.split(":")[0].split(".")[0]
        if database not in self.databases:
            response = Response("database not found", status=404)
        else:
            adapter = URLS.bind_to_environ(environ)
            try:
                endpoint, args = adapter.match()
                response = getattr(self, endpoint)(request, database, **args)
            except Exception as e:  # werkzeug HTTPExceptions are responses
                if hasattr(e, "get_response"):
                    response = e.get_response(environ)
                else:
                    raise
        return response(environ, start_response)

    def user(self, request, database):
        session = self.sessions.get(request.cookies.get("session_id", ""))
        return session[1] if session and session[0] == database else None

    def root(self, request, database):
        return redirect("/web", 303)

    def webclient(self, request, database):
        login = self.user(request, database)
        if login is None:
            return redirect("/web/login?redirect=/web", 303)
        html = f"<!doctype html><title>Odoo</title><h1>Odoo web client</h1><p>database {database}, user {login}</p>"
        return Response(html, mimetype="text/html")

    def login(self, request, database):
        if request.method == "POST":
            login, password = request.form.get("login", ""), request.form.get("password", "")
            if USERS.get(login) == password:
                sid = secrets.token_hex(20)
                self.sessions[sid] = (database, login)
                target = request.args.get("redirect") or request.form.get("redirect") or "/web"
                response = redirect(target if target.startswith("/") else "/web", 303)
                response.set_cookie("session_id", sid, httponly=True, samesite="Lax", path="/")
                return response
            error = "<p class=error>Wrong login/password</p>"
        else:
            error = ""
        html = (
            "<!doctype html><title>Login | Odoo</title><h1>Odoo login</h1>" + error +
            f"<p>database {database}</p><form method=post action=/web/login>"
            "<input name=login><input name=password type=password><button>Log in</button></form>"
        )
        return Response(html, mimetype="text/html")

    def logout(self, request, database):
        self.sessions.pop(request.cookies.get("session_id", ""), None)
        return redirect("/web/login", 303)

    def static(self, request, database, path):
        found = STATIC.get("web/static/" + path)
        if found is None:
            return Response("not found", status=404)
        return Response(found[1], mimetype=found[0])

    def records(self, database, model, method):
        if model not in MODELS or method not in ("search_read", "read"):
            return None
        return {"database": database, "model": model, "records": MODELS[model]}

    def call_kw(self, request, database, model, method):
        """JSON-RPC 2.0 as the web client sends it (session cookie required)."""
        body = request.get_json(silent=True) or {}
        rpc_id = body.get("id")
        if self.user(request, database) is None:
            error = {"code": 100, "message": "Odoo Session Expired"}
            return Response(json.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error}), mimetype="application/json")
        result = self.records(database, model, method)
        if result is None:
            return Response(json.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": 404, "message": "no such model"}}), mimetype="application/json")
        return Response(json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result}), mimetype="application/json")

    def json2(self, request, database, model, method):
        """The JSON-2 API: bearer API key, plain JSON in and out."""
        if request.headers.get("Authorization", "") != "Bearer api-key-" + database:
            return Response(json.dumps({"error": "invalid API key"}), status=401, mimetype="application/json")
        result = self.records(database, model, method)
        if result is None:
            return Response(json.dumps({"error": "no such model"}), status=404, mimetype="application/json")
        return Response(json.dumps(result), mimetype="application/json")


def main():
    port = int(sys.argv[1])
    databases = sys.argv[2:] or ["acme"]
    app = ProxyFix(OdooLike(databases), x_for=1, x_proto=1, x_host=1)
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"serving databases {sorted(databases)} on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
