/* A C app on sdk/facet.h's HTTP helpers, built by tests/sample_apps/test_http.py with zig cc:
 * it answers 201 with the fields it read back, so the test sees what each helper parsed. */
#define FACET_IMPLEMENTATION
#define FACET_HTTP
#include "facet.h"

void facet_app_init(void) {}

void facet_app_handle(const char *body, uint32_t len, facet_buf *out) { facet_buf_put(out, body, len); }

static void field(facet_buf *out, const char *label, const char *s, uint32_t n, int found) {
    facet_buf_str(out, label);
    facet_buf_str(out, "=");
    if (found) facet_buf_put(out, s, n);
    else facet_buf_str(out, "(none)");
    facet_buf_str(out, "\n");
}

void facet_app_http(const facet_http_request *req, facet_buf *out) {
    const char *s;
    uint32_t n;
    facet_buf body = {0, 0, 0};
    int found = facet_http_field(req, "method", &s, &n);
    field(&body, "method", s, n, found);
    found = facet_http_field(req, "path", &s, &n);
    field(&body, "path", s, n, found);
    found = facet_http_field(req, "base", &s, &n);
    field(&body, "base", s, n, found);
    found = facet_http_header(req, "x-test", &s, &n);
    field(&body, "x-test", s, n, found);
    const char *query;
    uint32_t query_len;
    facet_buf q = {0, 0, 0};
    found = facet_http_field(req, "query", &query, &query_len) && facet_form_value(query, query_len, "q", &q);
    field(&body, "q", q.data, q.len, found);
    facet_buf name = {0, 0, 0};
    facet_buf escaped = {0, 0, 0};
    found = facet_form_value(req->body, req->body_len, "name", &name);
    facet_buf_html(&escaped, name.data, name.len);
    field(&body, "name", escaped.data, escaped.len, found);

    facet_http_begin(out, 201);
    int refused = !facet_http_add_header(out, "Content-Length", "5", 1) + !facet_http_add_header(out, "x-bad", "a\r\nb", 4) +
                  !facet_http_add_header(out, "bad name", "x", 1);
    facet_http_add_header(out, "content-type", "text/plain; charset=utf-8", 25);
    facet_buf_str(&body, "refused=");
    facet_buf_int(&body, refused);
    facet_buf_str(&body, "\n");
    facet_http_end_head(out);
    facet_buf_put(out, body.data, body.len);
}
