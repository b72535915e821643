#!/usr/bin/env python3
"""A WSGI application that dispatches the way Odoo 17-19 does, on werkzeug (Odoo's own
HTTP stack), and records which model every request actually reached.

Modelled on Odoo's source: `odoo/http.py` (routing map with `strict_slashes=False`,
`type="json"` routes taking only JSON bodies, `params = dict(jsonrequest["params"],
**path_args)`, HTTP routes merging query and form as `{**args, **form, **files}` under
the path's arguments), `addons/web/controllers/dataset.py` (`call_kw`, `call_button`
with the path suffix ignored, `resequence`), `addons/base/controllers/rpc.py` and
`odoo/service/model.py` (`/jsonrpc`, `/xmlrpc/<service>`, `/xmlrpc/2/<service>`
through `xmlrpc.client.loads`, `execute_kw`/`execute` with
`[db, uid, password, model, method, ...]`), the JSON-2 API (`/json/2/<model>/<method>`,
bearer API keys), `export.py` (`data` -> `model`), `binary.py` (`/web/content`,
`/web/image`: the model from the path, else the parameters, else `ir.attachment`) and
`report.py` (`/report/<converter>/<report>`, `/report/download` and the report named
in its URL).

- Database per host, like `dbfilter = ^%d$`: the first label of the Host; a host
  without a database gets 404.
- `proxy_mode`: werkzeug's ProxyFix trusts one proxy's X-Forwarded-For/-Proto/-Host.
- Sessions by the `session_id` cookie (`/web/login`), API keys `api-key-<db>`.
- `GET /__reached` (any host) lists what was dispatched: database, route, model,
  method, user; it is the tests' view of what the app executed.

Odoo itself is too heavy to install for a test (PostgreSQL, hundreds of modules).

Usage: app.py PORT [DATABASE ...]
"""
import json
import secrets
import sys
import threading
import xmlrpc.client

from werkzeug.exceptions import BadRequest, HTTPException, NotFound
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

USERS = {"admin": ("admin", 2)}  # login -> (password, uid)
MODELS = {
    "sale.order": [{"id": 1, "name": "S00001", "amount_total": 120.0}],
    "res.partner": [{"id": 3, "name": "Deco Addict"}],
    "mrp.production": [{"id": 7, "name": "WH/MO/00007", "product_qty": 40.0}],
    "mrp.bom.line": [{"id": 9, "product_qty": 2.0}],
    "mrpx.order": [{"id": 11, "name": "not manufacturing"}],
    "hr.employee": [{"id": 3, "name": "Peter Gibbons"}],
    "ir.attachment": [{"id": 42, "name": "logo.png"}],
}
REPORTS = {"mrp.report_mrporder", "sale.report_saleorder", "stock.label"}
STATIC = {"web/static/src/css/web.css": ("text/css", b"body { margin: 0; }\n")}
JSON_MIMETYPES = ("application/json", "application/json-rpc")

# The web client's RPC as Odoo 17's `@web/core/network/rpc` does it (XMLHttpRequest,
# JSON-RPC 2.0; a response with `error` rejects with an RPCError whose `data.name`,
# `data.message` and `message` the error dialog shows), reduced to a dialog element.
WEB_CLIENT_JS = """
let rpcId = 0;
function rpc(url, params) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.setRequestHeader("Content-Type", "application/json");
    request.onload = () => {
      if (request.status === 502) { reject(new Error("ConnectionLostError")); return; }
      let response;
      try { response = JSON.parse(request.response); } catch { reject(new Error("ConnectionLostError")); return; }
      if (!response.error) { resolve(response.result); return; }
      const error = new Error(response.error.message);
      error.code = response.error.code;
      error.data = response.error.data || {};
      error.exceptionName = error.data.name;
      reject(error);
    };
    request.onerror = () => reject(new Error("ConnectionLostError"));
    request.send(JSON.stringify({ id: ++rpcId, jsonrpc: "2.0", method: "call", params }));
  });
}
function dialog(error) {
  const box = document.createElement("div");
  box.className = "o_dialog";
  box.setAttribute("role", "dialog");
  const title = document.createElement("h4");
  title.className = "modal-title";
  title.textContent = error.message;
  const name = document.createElement("code");
  name.className = "o_error_name";
  name.textContent = error.exceptionName || "";
  const detail = document.createElement("p");
  detail.className = "o_error_detail";
  detail.textContent = (error.data && error.data.message) || "";
  box.append(title, name, detail);
  document.body.append(box);
}
for (const button of document.querySelectorAll("button[data-model]")) {
  button.addEventListener("click", () => {
    const model = button.dataset.model;
    rpc(`/web/dataset/call_kw/${model}/search_read`, { model, method: "search_read", args: [], kwargs: {} })
      .then((result) => {
        for (const record of result.records) {
          const item = document.createElement("li");
          item.textContent = `${model}: ${record.name}`;
          document.getElementById("records").append(item);
        }
      })
      .catch(dialog);
  });
}
"""

R = Rule
URLS = Map(
    [
        R("/", endpoint="root"),
        R("/web", endpoint="webclient"),
        R("/web/login", endpoint="login", methods=["GET", "POST"]),
        R("/web/session/logout", endpoint="logout"),
        R("/web/static/<path:path>", endpoint="static"),
        R("/web/dataset/call_kw", endpoint="call_kw", methods=["POST"]),
        R("/web/dataset/call_kw/<path:path>", endpoint="call_kw", methods=["POST"]),
        R("/web/dataset/call_button", endpoint="call_button", methods=["POST"]),
        R("/web/dataset/call_button/<path:path>", endpoint="call_button", methods=["POST"]),
        R("/web/dataset/resequence", endpoint="resequence", methods=["POST"]),
        R("/jsonrpc", endpoint="jsonrpc", methods=["POST"]),
        R("/xmlrpc/<service>", endpoint="xmlrpc_1", methods=["POST"]),
        R("/xmlrpc/2/<service>", endpoint="xmlrpc_2", methods=["POST"]),
        R("/json/2/<model>/<method>", endpoint="json2", methods=["POST"]),
        R("/web/export/csv", endpoint="export"),
        R("/web/export/xlsx", endpoint="export"),
        R("/web/content", endpoint="content"),
        R("/web/content/<string:xmlid>", endpoint="content"),
        R("/web/content/<int:id>", endpoint="content"),
        R("/web/content/<int:id>/<string:filename>", endpoint="content"),
        R("/web/content/<string:model>/<int:id>/<string:field>", endpoint="content"),
        R("/web/content/<string:model>/<int:id>/<string:field>/<string:filename>", endpoint="content"),
        R("/web/image", endpoint="content"),
        R("/web/image/<string:xmlid>", endpoint="content"),
        R("/web/image/<int:id>", endpoint="content"),
        R("/web/image/<int:id>/<string:filename>", endpoint="content"),
        R("/web/image/<string:model>/<int:id>/<string:field>", endpoint="content"),
        R("/web/image/<string:model>/<int:id>/<string:field>/<string:filename>", endpoint="content"),
        R("/report/<converter>/<reportname>", endpoint="report"),
        R("/report/<converter>/<reportname>/<docids>", endpoint="report"),
        R("/report/download", endpoint="report_download"),
    ],
    strict_slashes=False,
)

# Route types, as Odoo declares them.
JSON_ROUTES = {"call_kw", "call_button", "resequence", "jsonrpc"}
USER_ROUTES = {"call_kw", "call_button", "resequence", "export", "report", "report_download", "webclient"}


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class OdooLike:
    def __init__(self, databases):
        self.databases = set(databases)
        self.sessions = {}  # session id -> (database, login)
        self.journal = []
        self.lock = threading.Lock()

    # -- dispatch -------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        if request.path == "/__reached":
            with self.lock:
                body = json.dumps(self.journal)
            return Response(body, mimetype="application/json")(environ, start_response)
        database = request.host.split(":")[0].split(".")[0]
        if database not in self.databases:
            return Response("database not found", status=404)(environ, start_response)
        adapter = URLS.bind_to_environ(environ)
        try:
            endpoint, path_args = adapter.match()
            if endpoint in JSON_ROUTES:
                response = self.json_dispatch(request, database, endpoint, path_args)
            else:
                # The raw body stays readable after the form is parsed (the more
                # permissive reading: a form-typed XML-RPC body is still dispatched).
                request.get_data(cache=True)
                params = {**request.args, **request.form, **request.files}
                params.update(path_args)
                response = getattr(self, endpoint)(request, database, **params)
        except HTTPException as e:
            response = e.get_response(environ)
        return response(environ, start_response)

    def json_dispatch(self, request, database, endpoint, path_args):
        """Odoo's JsonRPCDispatcher: JSON bodies only, params merged with the path's."""
        if request.mimetype not in JSON_MIMETYPES:
            raise BadRequest(f"Request inferred type is compatible with ['http'] but {request.path} is type=json")
        try:
            jsonrequest = json.loads(request.get_data(as_text=True))
        except ValueError:
            raise BadRequest("Invalid JSON data")
        rpc_id = jsonrequest.get("id") if isinstance(jsonrequest, dict) else None
        try:
            params = dict(jsonrequest.get("params", {}))
            params.update(path_args)
            if endpoint in USER_ROUTES and self.user(request, database) is None:
                raise RpcError(100, "Odoo Session Expired")
            result = getattr(self, endpoint)(request, database, **params)
            body = {"jsonrpc": "2.0", "id": rpc_id, "result": result}
        except RpcError as e:
            body = {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": e.code, "message": e.message}}
        except Exception as e:  # Odoo answers every other error with code 200
            body = {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": 200, "message": "Odoo Server Error", "data": {"message": repr(e)}}}
        return Response(json.dumps(body), mimetype="application/json")

    def record(self, database, route, model, method, user):
        with self.lock:
            self.journal.append({"database": database, "route": route, "model": model, "method": method, "user": user})

    def execute(self, database, route, model, method, user):
        """A model's method, as `execute_kw` reaches it: recorded, then run."""
        self.record(database, route, model, method, user)
        if model not in MODELS:
            raise RpcError(200, f"Object {model} doesn't exist")
        return {"database": database, "model": model, "records": MODELS[model]}

    def user(self, request, database):
        session = self.sessions.get(request.cookies.get("session_id", ""))
        return session[1] if session and session[0] == database else None

    # -- pages ----------------------------------------------------------------------

    def root(self, request, database, **_):
        return redirect("/web", 303)

    def webclient(self, request, database, **_):
        login = self.user(request, database)
        if login is None:
            return redirect("/web/login?redirect=/web", 303)
        buttons = "".join(
            f'<button type=button data-model="{m}">{m}</button>' for m in ("sale.order", "mrp.production")
        )
        html = (
            "<!doctype html><title>Odoo</title><h1>Odoo web client</h1>"
            f"<p>database {database}, user {login}</p>{buttons}<ul id=records></ul>"
            f"<script>{WEB_CLIENT_JS}</script>"
        )
        return Response(html, mimetype="text/html")

    def login(self, request, database, **_):
        if request.method == "POST":
            login, password = request.form.get("login", ""), request.form.get("password", "")
            if login in USERS and USERS[login][0] == password:
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

    def logout(self, request, database, **_):
        self.sessions.pop(request.cookies.get("session_id", ""), None)
        return redirect("/web/login", 303)

    def static(self, request, database, path, **_):
        found = STATIC.get("web/static/" + path)
        if found is None:
            return Response("not found", status=404)
        return Response(found[1], mimetype=found[0])

    # -- the web client's JSON-RPC (dataset.py) --------------------------------------

    def call_kw(self, request, database, model, method, args, kwargs, path=None):
        return self.execute(database, "call_kw", model, method, self.user(request, database))

    def call_button(self, request, database, model, method, args, kwargs, path=None):
        return self.execute(database, "call_button", model, method, self.user(request, database))

    def resequence(self, request, database, model, ids, field="sequence", offset=0):
        return self.execute(database, "resequence", model, "write", self.user(request, database))

    # -- external API (rpc.py, service/model.py) -------------------------------------

    def dispatch_rpc(self, database, route, service, method, params):
        if service == "common":
            if method == "version":
                return {"server_version": "17.0"}
            if method in ("login", "authenticate"):
                db, login, password = params[0], params[1], params[2]
                found = USERS.get(login)
                return found[1] if db == database and found and found[0] == password else False
            raise RpcError(200, f"Method not available {method}")
        if service == "db":
            raise RpcError(200, "Access Denied")
        if service != "object":
            raise KeyError(service)
        db, uid, passwd = params[0], int(params[1]), params[2]
        login = next((l for l, (p, u) in USERS.items() if u == uid and p == passwd), None)
        if db != database or login is None:
            raise RpcError(200, "Access Denied")
        if method == "execute":
            model, model_method = params[3], params[4]
        elif method == "execute_kw":
            model, model_method = params[3], params[4]
        else:
            raise NameError(f"Method not available {method}")
        return self.execute(database, route, model, model_method, login)

    def jsonrpc(self, request, database, service, method, args):
        return self.dispatch_rpc(database, "jsonrpc", service, method, args)

    def xmlrpc(self, request, database, service, route, use_builtin_types):
        data = request.get_data()
        try:
            params, method = xmlrpc.client.loads(data, use_builtin_types=use_builtin_types)
            result = self.dispatch_rpc(database, route, service, method, params)
            body = xmlrpc.client.dumps((result,), methodresponse=1, allow_none=False)
        except RpcError as e:
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(e.code, e.message))
        except Exception as e:
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(1, repr(e)))
        return Response(body, mimetype="text/xml")

    def xmlrpc_1(self, request, database, service, **_):
        return self.xmlrpc(request, database, service, "xmlrpc", False)

    def xmlrpc_2(self, request, database, service, **_):
        return self.xmlrpc(request, database, service, "xmlrpc/2", True)

    def json2(self, request, database, model, method, **_):
        """The JSON-2 API (Odoo 19): bearer API key, plain JSON in and out."""
        if request.headers.get("Authorization", "").lower() != "bearer api-key-" + database:
            return Response(json.dumps({"error": "invalid API key"}), status=401, mimetype="application/json")
        try:
            result = self.execute(database, "json2", model, method, "admin")
        except RpcError as e:
            return Response(json.dumps({"error": e.message}), status=404, mimetype="application/json")
        return Response(json.dumps(result), mimetype="application/json")

    # -- HTTP routes naming models (export.py, binary.py, report.py) -----------------

    def export(self, request, database, data, **_):
        login = self.user(request, database)
        if login is None:
            return redirect("/web/login", 303)
        params = json.loads(data)
        model = params["model"]
        result = self.execute(database, "export", model, "export_data", login)
        lines = ["id,name"] + [f"{r['id']},{r.get('name', '')}" for r in result["records"]]
        return Response("\n".join(lines) + "\n", mimetype="text/csv")

    def content(self, request, database, xmlid=None, model="ir.attachment", id=None, field="raw", filename=None, **_):
        try:
            result = self.execute(database, "content", model, "read", self.user(request, database))
        except RpcError:
            raise NotFound()
        return Response(json.dumps(result), mimetype="application/json")

    def report(self, request, database, converter, reportname, docids=None, **_):
        login = self.user(request, database)
        if login is None:
            return redirect("/web/login", 303)
        if converter not in ("html", "pdf", "text"):
            raise BadRequest(f"Converter {converter} not implemented.")
        self.record(database, "report", reportname, "report", login)
        if reportname not in REPORTS:
            raise NotFound()
        return Response(f"report {reportname} {docids or ''}\n", mimetype="text/plain")

    def report_download(self, request, database, data, context=None, token=None, **_):
        requestcontent = json.loads(data)
        url, type_ = requestcontent[0], requestcontent[1]
        if type_ not in ("qweb-pdf", "qweb-text"):
            raise BadRequest("unknown report type")
        converter = "pdf" if type_ == "qweb-pdf" else "text"
        pattern = "/report/pdf/" if type_ == "qweb-pdf" else "/report/text/"
        reportname = url.split(pattern)[1].split("?")[0]
        docids = None
        if "/" in reportname:
            reportname, docids = reportname.split("/")
        return self.report(request, database, converter, reportname, docids)


def main():
    port = int(sys.argv[1])
    databases = sys.argv[2:] or ["acme"]
    app = ProxyFix(OdooLike(databases), x_for=1, x_proto=1, x_host=1)
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"serving databases {sorted(databases)} on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
