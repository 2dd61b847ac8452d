/* hits: page-view counters per path, in C with sdk/facet.h.
 *
 *   {"op":"hit","path":"/about"}   -> {"path":"/about","hits":N}
 *   {"op":"get","path":"/about"}   -> {"path":"/about","hits":N}
 *   {"op":"top"}                    -> the sql answer for the ten most viewed paths
 */
#define FACET_IMPLEMENTATION
#include "facet.h"

static int eq(const char *a, uint32_t n, const char *b) {
    uint32_t m = facet_strlen(b);
    if (n != m) return 0;
    for (uint32_t i = 0; i < n; i++) if (a[i] != b[i]) return 0;
    return 1;
}

static void run(const char *sql) {
    const char *answer;
    uint32_t len;
    facet_exec(sql, facet_strlen(sql), &answer, &len);
}

void facet_app_init(void) {
    run("{\"sql\":\"CREATE TABLE IF NOT EXISTS hits (path TEXT PRIMARY KEY, n INTEGER NOT NULL)\"}");
}

static void error(facet_buf *out, const char *message) {
    facet_buf_str(out, "{\"error\":");
    facet_buf_json_string(out, message, facet_strlen(message));
    facet_buf_str(out, "}");
}

/* Copy the integer after "rows":[[ in an sql answer. */
static int64_t first_int(const char *answer, uint32_t len) {
    for (uint32_t i = 0; i + 9 < len; i++) {
        if (answer[i] == '[' && answer[i + 1] == '[') {
            int64_t v = 0;
            for (uint32_t j = i + 2; j < len && answer[j] >= '0' && answer[j] <= '9'; j++) v = v * 10 + (answer[j] - '0');
            return v;
        }
    }
    return 0;
}

void facet_app_handle(const char *body, uint32_t len, facet_buf *out) {
    const char *op, *path;
    uint32_t op_len, path_len;
    if (!facet_json_string(body, len, "op", &op, &op_len)) {
        error(out, "expected JSON like {\"op\":\"hit\",\"path\":\"/\"}");
        return;
    }
    if (eq(op, op_len, "top")) {
        const char *answer;
        uint32_t answer_len;
        const char *sql = "{\"sql\":\"SELECT path, n FROM hits ORDER BY n DESC, path LIMIT 10\"}";
        facet_exec(sql, facet_strlen(sql), &answer, &answer_len);
        facet_buf_put(out, answer, answer_len);
        return;
    }
    int hit = eq(op, op_len, "hit");
    if (!hit && !eq(op, op_len, "get")) {
        error(out, "unknown op; expected hit, get or top");
        return;
    }
    if (!facet_json_string(body, len, "path", &path, &path_len) || path_len == 0 || path_len > 512 || path[0] != '/') {
        error(out, "path must be 1-512 characters starting with /");
        return;
    }
    facet_buf req = {0, 0, 0};
    facet_buf_str(&req, hit ? "{\"sql\":\"INSERT INTO hits (path, n) VALUES (?, 1) ON CONFLICT(path) DO UPDATE SET n = n + 1 RETURNING n\",\"params\":["
                            : "{\"sql\":\"SELECT n FROM hits WHERE path = ?\",\"params\":[");
    facet_buf_json_string(&req, path, path_len);
    facet_buf_str(&req, "]}");
    const char *answer;
    uint32_t answer_len;
    facet_exec(req.data, req.len, &answer, &answer_len);
    facet_buf_str(out, "{\"path\":");
    facet_buf_json_string(out, path, path_len);
    facet_buf_str(out, ",\"hits\":");
    facet_buf_int(out, first_int(answer, answer_len));
    facet_buf_str(out, "}");
}
