"""The sample apps over HTTP, through a real Supervisor's `fetch` and the committed .wasm:
todo's page and forms (303 + location, escaping of hostile titles), its JSON API, 404/405;
shortener's redirects and refusal of non-http(s) URLs; v1 apps (counter & co) answering
200 application/json; the C SDK's HTTP helpers."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from runtime import HttpRequest
from tests.conftest import ROOT

APPS = ROOT / "sample_apps"
FORM = (("content-type", "application/x-www-form-urlencoded"),)
JSON = (("content-type", "application/json"),)


def load(sup, *names):
    """The supervisor with the named samples loaded (each compile costs ~0.3 s: only those used)."""
    for name in names:
        sup.load_app(APPS / name / f"{name}.wasm", name)
    return sup


@pytest.fixture(params=["zig", "js"])
def todo(sup, request):
    """todo in both its implementations: todo.zig (a core module) and todo.js (a component,
    built from source on first use; later runs take it from the build cache)."""
    if request.param == "js":
        sup.load_app(APPS / "todo" / "todo.js", "todo")
        return sup
    return load(sup, "todo")


@pytest.fixture
def todo_zig(sup):
    return load(sup, "todo")


@pytest.fixture
def shortener(sup):
    return load(sup, "shortener")


def fetch(sup, target, method="GET", path="/", *, body=b"", headers=(), query=""):
    """One request as the server would hand it over: mounted at /APP/FACET."""
    request = HttpRequest(method=method, path=path, query=query, headers=tuple(headers), body=body, base="/" + target)
    result = sup.fetch(target, request)
    assert result.ok, (result.error, result.message)
    assert result.http is not None
    return result.http


def header(response, name):
    values = [v for n, v in response.headers if n == name]
    assert len(values) <= 1, response.headers
    return values[0] if values else None


def post_form(sup, target, path, fields):
    return fetch(sup, target, "POST", path, body=urlencode(fields).encode(), headers=FORM)


class Page(HTMLParser):
    """The parts of a todo page the tests look at: every start tag, the text of each
    `<span class="title">`, the forms and their inputs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.titles: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.inputs: list[dict[str, str]] = []
        self.headings: list[str] = []
        self.done_titles: list[str] = []
        self._in_title = False
        self._in_heading = False
        self._li_done = False

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "li":
            self._li_done = attributes.get("class") == "done"
        if tag == "span" and attributes.get("class") == "title":
            self._in_title = True
            self.titles.append("")
        if tag in ("h1", "h2"):
            self._in_heading = True
            self.headings.append("")
        if tag == "form":
            self.forms.append(attributes)
        if tag == "input":
            self.inputs.append(attributes)

    def handle_endtag(self, tag):
        if tag == "span" and self._in_title:
            self._in_title = False
            if self._li_done:
                self.done_titles.append(self.titles[-1])
        if tag in ("h1", "h2"):
            self._in_heading = False

    def handle_data(self, data):
        if self._in_title:
            self.titles[-1] += data
        if self._in_heading:
            self.headings[-1] += data


def page(sup, target="todo/alice"):
    response = fetch(sup, target)
    assert response.status == 200
    assert header(response, "content-type") == "text/html; charset=utf-8"
    text = response.body.decode("utf-8")
    assert text.startswith("<!DOCTYPE html>\n")
    parsed = Page()
    parsed.feed(text)
    parsed.close()
    return parsed, text


def api_items(sup, target="todo/alice", query=""):
    response = fetch(sup, target, "GET", "/api/items", query=query)
    assert response.status == 200 and header(response, "content-type") == "application/json"
    return json.loads(response.body)["items"]


# -- todo: the page and its forms --------------------------------------------------------


def test_todo_page_lists_items_added_through_the_form(todo):
    parsed, text = page(todo)
    assert '<meta charset="utf-8">' in text and "<html lang=" in text
    assert parsed.titles == [] and "Todo" in parsed.headings
    add = [f for f in parsed.forms if f.get("action") == "/todo/alice/items"]
    assert add and add[0]["method"] == "post"
    assert any(i.get("name") == "title" for i in parsed.inputs)

    for title in ("milk", "eggs & bread"):
        response = post_form(todo, "todo/alice", "/items", {"title": title})
        assert response.status == 303
        assert header(response, "location") == "/todo/alice/"
    parsed, _ = page(todo)
    assert parsed.titles == ["milk", "eggs & bread"]
    assert "home" in parsed.headings  # the form's default list
    # The same database as the JSON protocol on facet_handle.
    listed = json.loads(todo.call("todo/alice", json.dumps({"op": "list", "list": "home"})).response)
    assert [i["title"] for i in listed["items"]] == ["milk", "eggs & bread"]
    # And a title added there shows on the page.
    todo.call("todo/alice", json.dumps({"op": "add", "list": "work", "title": "report"}))
    assert page(todo)[0].titles == ["milk", "eggs & bread", "report"]


@pytest.mark.parametrize(
    "title",
    [
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "' onmouseover='alert(1)",
        "</span></li></ul><script>x</script>",
        "&lt;already escaped&gt; &amp;",
    ],
)
def test_todo_page_escapes_hostile_titles(todo, title):
    assert post_form(todo, "todo/alice", "/items", {"title": title, "list": title}).status == 303
    parsed, text = page(todo)
    # Parsed back, the page holds the title as text, and no element the app did not write.
    assert parsed.titles == [title]
    assert title in parsed.headings  # the list name is escaped too
    assert set(parsed.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "ul", "li", "span"} | {
        "form",
        "button",
        "label",
        "input",
    }
    assert "<script" not in text and "<img" not in text
    csp = header(fetch(todo, "todo/alice"), "content-security-policy")
    assert csp is not None and "default-src 'none'" in csp


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"title": ""}, "empty"),
        ({"title": " \t "}, "blank"),
        ({}, "missing"),
        ({"title": "x" * 501}, "over 500 bytes"),
        ({"title": "é" * 251}, "502 bytes of UTF-8"),
        ({"title": "ok", "list": "l" * 501}, "list name over 500 bytes"),
    ],
)
def test_todo_form_refuses_bad_titles_with_a_400_page(todo, fields, why):
    response = post_form(todo, "todo/alice", "/items", fields)
    assert response.status == 400, why
    assert header(response, "content-type") == "text/html; charset=utf-8"
    assert header(response, "location") is None
    assert api_items(todo) == []


def test_todo_form_title_limits(todo):
    # 500 bytes is the limit (as the JSON protocol's), counted after trimming.
    assert post_form(todo, "todo/alice", "/items", {"title": "  " + "x" * 500 + "\n"}).status == 303
    # A body that decodes to bytes that are not UTF-8 is refused, not stored.
    response = fetch(todo, "todo/alice", "POST", "/items", body=b"title=%FF%FE", headers=FORM)
    assert response.status == 400
    # Not a form: 415.
    response = fetch(todo, "todo/alice", "POST", "/items", body=b'{"title": "x"}', headers=JSON)
    assert response.status == 415
    assert [i["title"] for i in api_items(todo)] == ["x" * 500]


def test_todo_form_decodes_percent_and_plus(todo):
    body = b"title=oat+milk+%26+honey%21+100%25+%zz&list=week%2Bend"
    assert fetch(todo, "todo/alice", "POST", "/items", body=body, headers=FORM).status == 303
    (item,) = api_items(todo)
    assert (item["title"], item["list"]) == ("oat milk & honey! 100% %zz", "week+end")
    # A % without two hex digits stays as it is, at the very end too; the first field wins.
    body = b"title=x%&list=y%4&title=ignored&=empty&flag"
    assert fetch(todo, "todo/alice", "POST", "/items", body=body, headers=FORM).status == 303
    assert (api_items(todo, query="list=y%254")[0]["title"]) == "x%"


def test_todo_buttons_mark_done_and_delete(todo):
    for title in ("a", "b"):
        post_form(todo, "todo/alice", "/items", {"title": title})
    response = fetch(todo, "todo/alice", "POST", "/items/1/done", headers=FORM)
    assert response.status == 303 and header(response, "location") == "/todo/alice/"
    parsed, _ = page(todo)
    assert parsed.done_titles == ["a"]
    assert {f["action"] for f in parsed.forms} >= {
        "/todo/alice/items/1/undone",
        "/todo/alice/items/1/delete",
        "/todo/alice/items/2/done",
    }
    assert fetch(todo, "todo/alice", "POST", "/items/1/undone").status == 303
    assert page(todo)[0].done_titles == []
    assert fetch(todo, "todo/alice", "POST", "/items/1/delete").status == 303
    assert page(todo)[0].titles == ["b"]
    assert fetch(todo, "todo/alice", "POST", "/items/1/delete").status == 404
    assert fetch(todo, "todo/alice", "POST", "/items/2/fly").status == 404
    response = fetch(todo, "todo/alice", "GET", "/items/2/done")
    assert response.status == 405 and header(response, "allow") == "POST"


def test_todo_pages_of_two_facets_are_separate_and_use_their_base(todo):
    post_form(todo, "todo/alice", "/items", {"title": "alice's"})
    post_form(todo, "todo/bob", "/items", {"title": "bob's"})
    bob, _ = page(todo, "todo/bob")
    assert bob.titles == ["bob's"]
    assert all(f["action"].startswith("/todo/bob/") for f in bob.forms)
    # With host routing the base is "": links are then plain absolute paths.
    response = todo.fetch("todo/bob", HttpRequest(method="POST", path="/items", body=b"title=x", headers=FORM))
    assert response.ok and header(response.http, "location") == "/"


# -- todo: the JSON API over HTTP ------------------------------------------------------------


def test_todo_json_api(todo):
    response = fetch(todo, "todo/alice", "POST", "/api/items", body=b'{"title": "milk"}', headers=JSON)
    assert response.status == 201
    assert header(response, "content-type") == "application/json"
    created = json.loads(response.body)
    assert created == {"id": 1, "list": "home", "title": "milk", "position": 1, "done": False}
    assert header(response, "location") == "/todo/alice/api/items/1"
    body = json.dumps({"title": "report", "list": "work"}).encode()
    assert fetch(todo, "todo/alice", "POST", "/api/items", body=body, headers=JSON).status == 201

    assert [(i["id"], i["list"], i["title"]) for i in api_items(todo)] == [(1, "home", "milk"), (2, "work", "report")]
    assert [i["title"] for i in api_items(todo, query="list=work")] == ["report"]
    assert api_items(todo, query="list=nope") == []

    response = fetch(todo, "todo/alice", "PATCH", "/api/items/1", body=b'{"done": true, "title": "oat milk"}')
    assert response.status == 200
    assert json.loads(response.body) == {"id": 1, "list": "home", "title": "oat milk", "done": True, "position": 1}
    assert json.loads(fetch(todo, "todo/alice", "GET", "/api/items/1").body)["done"] is True

    response = fetch(todo, "todo/alice", "DELETE", "/api/items/1")
    assert response.status == 200 and json.loads(response.body) == {"id": 1, "deleted": True}
    for method in ("GET", "DELETE", "PATCH"):
        response = fetch(todo, "todo/alice", method, "/api/items/1", body=b'{"done": false}')
        assert response.status == 404, method
        assert json.loads(response.body)["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"title": ""}', b'{"title": 5}', b"{}", json.dumps({"title": "x" * 501}).encode()],
)
def test_todo_json_api_refuses_bad_items_with_400(todo, body):
    response = fetch(todo, "todo/alice", "POST", "/api/items", body=body, headers=JSON)
    assert response.status == 400
    error = json.loads(response.body)["error"]
    assert error["code"] == "bad_request" and error["message"]
    assert api_items(todo) == []


@pytest.mark.parametrize(
    "method, path, status, allow",
    [
        ("GET", "/nope", 404, None),
        ("GET", "/items/", 404, None),
        ("GET", "/api/nope", 404, None),
        ("GET", "/api/items/x", 404, None),
        ("PUT", "/", 405, "GET, HEAD"),
        ("POST", "/", 405, "GET, HEAD"),
        ("GET", "/items", 405, "POST"),
        ("DELETE", "/api/items", 405, "GET, HEAD, POST"),
        ("POST", "/api/items/1", 405, "GET, HEAD, PATCH, DELETE"),
    ],
)
def test_todo_unknown_paths_404_and_wrong_methods_405(todo, method, path, status, allow):
    response = fetch(todo, "todo/alice", method, path)
    assert response.status == status
    assert header(response, "allow") == allow
    if path.startswith("/api/") and status == 404:
        assert json.loads(response.body)["error"]["code"] == "not_found"


def test_todo_keeps_its_json_protocol_on_call(todo):
    """facet_handle is unchanged: the same answers as tests/sample_apps/test_apps.py expects."""
    add = json.loads(todo.call("todo/alice", json.dumps({"op": "add", "list": "home", "title": "milk"})).response)
    assert add == {"id": 1, "list": "home", "title": "milk", "position": 1, "done": False}
    assert json.loads(todo.call("todo/alice", "not json").response)["error"]


def test_todo_memory_is_steady_over_http(todo_zig):
    # Core modules only: a component's linear memory is not visible to the host (runtime/components.py).
    todo = todo_zig
    todo.set_quotas("todo/mem", rate="off")
    for i in range(20):
        post_form(todo, "todo/mem", "/items", {"title": f"item {i} " + "t" * 200})
    sizes = []
    for i in range(3000):
        result = todo.fetch("todo/mem", HttpRequest(method="GET", path="/", base="/todo/mem"))
        assert result.ok and result.http.status == 200
        if i % 500 == 499:
            sizes.append(result.usage.memory)
    assert not result.usage.cold_start
    assert sizes[-1] == sizes[1], sizes


# -- shortener ----------------------------------------------------------------------------


def stats(sup, code):
    return json.loads(sup.call("shortener/acme", json.dumps({"op": "stats", "id": code})).response)


def test_shortener_creates_and_redirects(shortener):
    url = "https://example.com/docs?page=2#top"
    response = post_form(shortener, "shortener/acme", "/", {"url": url})
    assert response.status == 201
    short = header(response, "location")
    assert short.startswith("/shortener/acme/")
    code = short.rsplit("/", 1)[1]
    assert len(code) == 7
    assert short.encode() in response.body  # the page shows the link

    redirect = fetch(shortener, "shortener/acme", "GET", "/" + code)
    assert redirect.status == 302
    assert header(redirect, "location") == url
    assert stats(shortener, code)["hits"] == 1
    # HEAD answers the same without counting a hit.
    head = fetch(shortener, "shortener/acme", "HEAD", "/" + code)
    assert (head.status, header(head, "location")) == (302, url)
    assert stats(shortener, code)["hits"] == 1

    # JSON: the same URL gets the same code (200, not created); a new one 201.
    response = fetch(shortener, "shortener/acme", "POST", "/", body=json.dumps({"url": url}).encode(), headers=JSON)
    assert response.status == 200
    assert json.loads(response.body) == {"id": code, "url": url, "short": short, "new": False}
    response = fetch(shortener, "shortener/acme", "POST", "/", body=b'{"url": "http://example.org/"}', headers=JSON)
    assert response.status == 201 and json.loads(response.body)["new"] is True
    assert header(response, "location") == json.loads(response.body)["short"]


def test_shortener_percent_encodes_non_ascii_in_location(shortener):
    url = "https://example.com/été"
    created = fetch(shortener, "shortener/acme", "POST", "/", body=json.dumps({"url": url}).encode(), headers=JSON)
    code = json.loads(created.body)["id"]
    redirect = fetch(shortener, "shortener/acme", "GET", "/" + code)
    assert redirect.status == 302
    assert header(redirect, "location") == "https://example.com/" + quote("été")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://example.com/",
        "https://",
        "https:///path",
        "//example.com/",
        "https://example.com/\r\nset-cookie: a=b",
        "https://example.com/a b",
        "https://example.com/" + "x" * 2048,
    ],
)
def test_shortener_refuses_non_http_urls(shortener, url):
    response = post_form(shortener, "shortener/acme", "/", {"url": url})
    assert response.status == 400
    assert header(response, "location") is None
    response = fetch(shortener, "shortener/acme", "POST", "/", body=json.dumps({"url": url}).encode(), headers=JSON)
    assert response.status == 400 and json.loads(response.body)["error"]["code"] == "bad_request"
    # Nothing was stored.
    assert json.loads(shortener.call("shortener/acme", json.dumps({"op": "top"})).response) == {"links": []}


@pytest.mark.parametrize("stored", ["javascript:alert(1)", "https://example.com/\r\nset-cookie: a=b"])
def test_shortener_checks_the_stored_url_again_before_redirecting(shortener, stored):
    """A row written around the app (here straight into its database) is not sent."""
    created = post_form(shortener, "shortener/acme", "/", {"url": "https://example.com/"})
    code = header(created, "location").rsplit("/", 1)[1]
    assert shortener.evict("shortener/acme")
    with sqlite3.connect(shortener.db_path("shortener/acme")) as db:
        db.execute("UPDATE links SET url = ? WHERE id = ?", (stored, code))
    db.close()
    response = fetch(shortener, "shortener/acme", "GET", "/" + code)
    assert response.status == 500
    assert header(response, "location") is None
    assert stats(shortener, code)["hits"] == 0
    assert any(code in r.message and r.level == "warn" for r in shortener.logs("shortener/acme"))


def test_shortener_unknown_codes_and_methods(shortener):
    assert fetch(shortener, "shortener/acme", "GET", "/nope123").status == 404
    assert fetch(shortener, "shortener/acme", "GET", "/favicon.ico").status == 404
    assert fetch(shortener, "shortener/acme", "GET", "/a/b").status == 404
    response = fetch(shortener, "shortener/acme", "DELETE", "/abc")
    assert response.status == 405 and header(response, "allow") == "GET, HEAD"
    response = fetch(shortener, "shortener/acme", "PUT", "/")
    assert response.status == 405 and header(response, "allow") == "GET, HEAD, POST"
    response = fetch(shortener, "shortener/acme", "POST", "/", body=b"url", headers=(("content-type", "text/plain"),))
    assert response.status == 415
    form = fetch(shortener, "shortener/acme")
    assert form.status == 200 and b'<form method="post" action="/shortener/acme/">' in form.body


# -- v1 apps over HTTP -----------------------------------------------------------------------


def test_counter_v1_app_answers_200_json_over_fetch(sup):
    load(sup, "counter")
    response = fetch(sup, "counter/c", "POST", "/", body=b'{"op": "incr", "by": 5}')
    assert response.status == 200
    assert header(response, "content-type") == "application/json"
    assert json.loads(response.body) == {"count": 5}
    # Any path and method reach facet_handle with the body; an empty body is its default op.
    assert json.loads(fetch(sup, "counter/c", "GET", "/whatever").body) == {"count": 6}
    assert json.loads(sup.call("counter/c", json.dumps({"op": "get"})).response)["count"] == 6


@pytest.mark.parametrize(
    "target, body",
    [
        ("guestbook/lobby", {"op": "sign", "name": "ada", "message": "hi"}),
        ("poll/team", {"op": "polls"}),
        ("hits/site", {"op": "hit", "path": "/"}),
    ],
)
def test_other_v1_samples_answer_json_over_fetch(sup, target, body):
    load(sup, target.split("/")[0])
    response = fetch(sup, target, "POST", "/", body=json.dumps(body).encode(), headers=JSON)
    assert response.status == 200
    assert header(response, "content-type") == "application/json"
    assert "error" not in json.loads(response.body)


# -- the C SDK's HTTP helpers ----------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="the Zig toolchain is not installed")
def test_c_sdk_http_helpers(sup, tmp_path: Path):
    wasm = tmp_path / "echo.wasm"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            "--target=wasm32-freestanding",
            "-O2",
            "-nostdlib",
            f"-I{APPS / 'sdk'}",
            "-Wl,--no-entry",
            "-Werror",
            "-Wall",
            "-Wextra",
            "-o",
            str(wasm),
            str(Path(__file__).with_name("http_echo.c")),
        ],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    sup.load_app(wasm, "echo")
    response = fetch(
        sup,
        "echo/x",
        "POST",
        "/a/b",
        body=b"a=1&name=%3Cb%3E+%26+O%27Neil&name=second",
        headers=(("x-other", "method"), ("x-test", "hello there"), *FORM),
        query="z=1&q=caf%C3%A9+au+lait%zz",
    )
    assert response.status == 201
    assert header(response, "content-type") == "text/plain; charset=utf-8"
    assert response.body.decode().splitlines() == [
        "method=POST",
        "path=/a/b",
        "base=/echo/x",
        "x-test=hello there",
        "q=café au lait%zz",
        "name=&lt;b&gt; &amp; O&#39;Neil",
        "refused=3",  # content-length, a CR/LF value and a name with a space were not added
    ]
    # A value written with JSON escapes is refused rather than half-parsed.
    response = fetch(sup, "echo/x", headers=(("x-test", 'say "hi"'),))
    assert "x-test=(none)" in response.body.decode().splitlines()


# -- the ABI page's example --------------------------------------------------------------


def test_abi_page_smallest_http_app_runs(sup, tmp_path: Path):
    """The WAT under "The smallest HTTP app" in ABI.md is a working app, as printed."""
    text = (APPS / "ABI.md").read_text()
    section = text[text.index("### The smallest HTTP app") :]
    wat = section[section.index("```wat\n") + len("```wat\n") : section.index("\n```", section.index("```wat"))]
    (tmp_path / "hello.wat").write_text(wat)
    sup.load_app(tmp_path / "hello.wat", "hello")
    response = fetch(sup, "hello/x", "POST", "/any", body=b"x" * 1000)
    assert (response.status, response.headers, response.body) == (
        200,
        (("content-type", "text/plain; charset=utf-8"),),
        b"hello\n",
    )
    called = sup.call("hello/x", "hi")
    assert called.ok and called.response == b"hello\n"
