/* facet.h: the Facets ABI v1 for C, in one header (see ../ABI.md).
 *
 * Build with zig's bundled clang, no libc:
 *   zig cc --target=wasm32-freestanding -O2 -nostdlib -Wl,--no-entry
 *          -Wl,--export=facet_alloc -Wl,--export=facet_handle -Wl,--export=facet_init app.c
 *
 * Define FACET_IMPLEMENTATION in exactly one file before including it.
 * Your app implements:
 *   void facet_app_init(void);                                  schema set-up (facet_init)
 *   void facet_app_handle(const char *body, uint32_t len, facet_buf *out);   one request
 *
 * An app that answers HTTP itself (the optional facet_http export, ABI.md "HTTP") also
 * defines FACET_HTTP before including this header and implements
 *   void facet_app_http(const facet_http_request *req, facet_buf *out);
 * which writes the response envelope with facet_http_begin/facet_http_add_header/
 * facet_http_end_head, then the body.
 *
 * Alarms (ABI.md "Alarms"): facet_set_alarm(at_ms) schedules the facet's one alarm
 * (0 set, 1 refused: no facet_alarm export, 2 refused: a bad time), facet_get_alarm()
 * answers its time or -1, facet_delete_alarm() cancels it. To receive them, export
 *   void facet_alarm(void)                                      (-Wl,--export=facet_alarm)
 * a trap there is a failed delivery: rolled back and retried.
 */
#ifndef FACET_H
#define FACET_H

#include <stddef.h>
#include <stdint.h>

#define FACET_IMPORT(name) __attribute__((import_module("facet"), import_name(name)))

FACET_IMPORT("sql") uint64_t facet_sql(const char *ptr, uint32_t len);
FACET_IMPORT("log") void facet_log(int32_t level, const char *ptr, uint32_t len);
FACET_IMPORT("now_ms") int64_t facet_now_ms(void);
FACET_IMPORT("random") void facet_random(void *ptr, uint32_t len);
FACET_IMPORT("set_alarm") int32_t facet_set_alarm(int64_t at_ms);
FACET_IMPORT("get_alarm") int64_t facet_get_alarm(void);
FACET_IMPORT("delete_alarm") void facet_delete_alarm(void);

/* A growable byte buffer in the per-request heap. */
typedef struct {
    char *data;
    uint32_t len;
    uint32_t cap;
} facet_buf;

void *facet_alloc(uint32_t size);
void facet_buf_put(facet_buf *b, const char *s, uint32_t n);
void facet_buf_str(facet_buf *b, const char *s);               /* raw text */
void facet_buf_json_string(facet_buf *b, const char *s, uint32_t n); /* "escaped" */
void facet_buf_int(facet_buf *b, int64_t v);
uint32_t facet_strlen(const char *s);

/* Run one statement; the answer is JSON in *answer (ptr, len). */
void facet_exec(const char *request_json, uint32_t len, const char **answer, uint32_t *answer_len);

/* Find "key": in a flat JSON object and return its string value (unescaped
 * only for plain text) or integer. Return 1 when found. Good enough for the
 * small requests apps receive; nested objects are not searched. */
int facet_json_string(const char *json, uint32_t len, const char *key, const char **out, uint32_t *out_len);
int facet_json_int(const char *json, uint32_t len, const char *key, int64_t *out);

void facet_app_init(void);
void facet_app_handle(const char *body, uint32_t len, facet_buf *out);

/* HTTP (ABI.md "HTTP"). The request envelope split in its head (one JSON line) and body. */
typedef struct {
    const char *head;
    uint32_t head_len;
    const char *body;
    uint32_t body_len;
} facet_http_request;

/* Split the envelope; 0 when there is no newline. */
int facet_http_parse(const char *req, uint32_t len, facet_http_request *out);
/* "method", "path", "query" or "base" of the head; 0 when absent or written with JSON
 * escapes (refused rather than half-parsed, as facet_json_string does). */
int facet_http_field(const facet_http_request *r, const char *key, const char **out, uint32_t *out_len);
/* The first value of header `name` (give it lower case); same rules as facet_http_field. */
int facet_http_header(const facet_http_request *r, const char *name, const char **out, uint32_t *out_len);
/* Decode the first field `name` of a form-encoded string (a body or a query) into *out
 * (`+` is a space, %XY a byte, a stray % stays); 1 when found. */
int facet_form_value(const char *enc, uint32_t len, const char *name, facet_buf *out);
/* Append text with & < > " ' escaped for HTML. */
void facet_buf_html(facet_buf *b, const char *s, uint32_t n);
/* The response head: begin, up to 64 headers, end; then append the body. A header the host
 * would refuse (not a token name, a forbidden name, a control character or non-ASCII
 * byte in the value, over 8 KiB) is not added and returns 0. */
void facet_http_begin(facet_buf *out, int status);
int facet_http_add_header(facet_buf *out, const char *name, const char *value, uint32_t value_len);
void facet_http_end_head(facet_buf *out);
#ifdef FACET_HTTP
void facet_app_http(const facet_http_request *req, facet_buf *out);
#endif

#ifdef FACET_IMPLEMENTATION

extern unsigned char __heap_base;
static uintptr_t heap_top;
static int request_done;

void *facet_alloc(uint32_t size) {
    if (heap_top == 0 || request_done) {   /* reset once the previous response was read */
        heap_top = (uintptr_t)&__heap_base;
        request_done = 0;
    }
    uintptr_t start = (heap_top + 7) & ~(uintptr_t)7;
    uintptr_t end = start + size;
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uintptr_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    }
    heap_top = end;
    return (void *)start;
}

uint32_t facet_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}

void facet_buf_put(facet_buf *b, const char *s, uint32_t n) {
    if (b->len + n > b->cap) {
        uint32_t cap = (b->cap ? b->cap * 2 : 256);
        while (cap < b->len + n) cap *= 2;
        char *grown = facet_alloc(cap);
        if (!grown) __builtin_trap();
        for (uint32_t i = 0; i < b->len; i++) grown[i] = b->data[i];
        b->data = grown;
        b->cap = cap;
    }
    for (uint32_t i = 0; i < n; i++) b->data[b->len + i] = s[i];
    b->len += n;
}

void facet_buf_str(facet_buf *b, const char *s) { facet_buf_put(b, s, facet_strlen(s)); }

void facet_buf_json_string(facet_buf *b, const char *s, uint32_t n) {
    static const char hex[] = "0123456789abcdef";
    facet_buf_put(b, "\"", 1);
    for (uint32_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            facet_buf_put(b, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            facet_buf_put(b, esc, 6);
        } else {
            facet_buf_put(b, (const char *)&s[i], 1);
        }
    }
    facet_buf_put(b, "\"", 1);
}

void facet_buf_int(facet_buf *b, int64_t v) {
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) tmp[n++] = '-';
    while (n) facet_buf_put(b, &tmp[--n], 1);
}

void facet_exec(const char *request_json, uint32_t len, const char **answer, uint32_t *answer_len) {
    uint64_t packed = facet_sql(request_json, len);
    *answer = (const char *)(uintptr_t)(packed >> 32);
    *answer_len = (uint32_t)packed;
}

static const char *find_key(const char *json, uint32_t len, const char *key, const char **end) {
    uint32_t k = facet_strlen(key);
    *end = json + len;
    for (uint32_t i = 0; i + k + 2 < len; i++) {
        if (json[i] != '"') continue;
        uint32_t j = 0;
        while (j < k && json[i + 1 + j] == key[j]) j++;
        if (j != k || json[i + 1 + k] != '"') continue;
        const char *p = json + i + k + 2;
        while (p < *end && (*p == ' ' || *p == ':')) p++;
        return p;
    }
    return 0;
}

int facet_json_string(const char *json, uint32_t len, const char *key, const char **out, uint32_t *out_len) {
    const char *end;
    const char *p = find_key(json, len, key, &end);
    if (!p || p >= end || *p != '"') return 0;
    const char *q = ++p;
    while (q < end && *q != '"') {
        if (*q == '\\') return 0;   /* escaped strings are refused rather than half-parsed */
        q++;
    }
    if (q >= end) return 0;
    *out = p;
    *out_len = (uint32_t)(q - p);
    return 1;
}

int facet_json_int(const char *json, uint32_t len, const char *key, int64_t *out) {
    const char *end;
    const char *p = find_key(json, len, key, &end);
    if (!p || p >= end) return 0;
    int neg = (*p == '-');
    if (neg) p++;
    if (p >= end || *p < '0' || *p > '9') return 0;
    int64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (v > 100000000000000000) return 0;
        v = v * 10 + (*p++ - '0');
    }
    *out = neg ? -v : v;
    return 1;
}


/* -- HTTP ----------------------------------------------------------------------------- */

int facet_http_parse(const char *req, uint32_t len, facet_http_request *out) {
    for (uint32_t i = 0; i < len; i++) {
        if (req[i] == '\n') {
            out->head = req;
            out->head_len = i;
            out->body = req + i + 1;
            out->body_len = len - i - 1;
            return 1;
        }
    }
    return 0;
}

/* A plain (escape-free) JSON string starting at p (at its opening quote). */
static int plain_string(const char *p, const char *end, const char **out, uint32_t *out_len) {
    if (p >= end || *p != '"') return 0;
    const char *q = ++p;
    while (q < end && *q != '"') {
        if (*q == '\\') return 0;
        q++;
    }
    if (q >= end) return 0;
    *out = p;
    *out_len = (uint32_t)(q - p);
    return 1;
}

/* Skip one JSON string at p (at its opening quote), escapes included; returns the byte after it. */
static const char *skip_string(const char *p, const char *end) {
    p++;
    while (p < end && *p != '"') p += (*p == '\\') ? 2 : 1;
    return p < end ? p + 1 : end;
}

static int same(const char *a, uint32_t n, const char *b) {
    uint32_t i = 0;
    for (; i < n; i++)
        if (!b[i] || a[i] != b[i]) return 0;
    return b[i] == 0;
}

/* Walk the head's top-level keys, string by string, so text inside a header value can
 * never be mistaken for a key. */
int facet_http_field(const facet_http_request *r, const char *key, const char **out, uint32_t *out_len) {
    const char *p = r->head, *end = r->head + r->head_len;
    int depth = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            const char *k;
            uint32_t klen;
            int is_key = depth == 1 && plain_string(p, end, &k, &klen);
            p = skip_string(p, end);
            const char *q = p;
            while (q < end && (*q == ' ' || *q == '\t')) q++;
            if (is_key && q < end && *q == ':') {
                q++;
                while (q < end && (*q == ' ' || *q == '\t')) q++;
                if (same(k, klen, key)) return plain_string(q, end, out, out_len);
                p = q;
            }
            continue;
        }
        if (c == '{' || c == '[') depth++;
        if (c == '}' || c == ']') depth--;
        p++;
    }
    return 0;
}

int facet_http_header(const facet_http_request *r, const char *name, const char **out, uint32_t *out_len) {
    const char *p = r->head, *end = r->head + r->head_len;
    int depth = 0, in_headers = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            const char *s;
            uint32_t slen;
            int plain = plain_string(p, end, &s, &slen);
            p = skip_string(p, end);
            if (depth == 1 && plain) {
                const char *q = p;
                while (q < end && (*q == ' ' || *q == '\t')) q++;
                if (q < end && *q == ':') in_headers = same(s, slen, "headers");
            } else if (depth == 3 && in_headers && plain && same(s, slen, name)) {
                /* ["name", "value"]: the value follows the comma */
                while (p < end && (*p == ' ' || *p == ',')) p++;
                return plain_string(p, end, out, out_len);
            } else if (depth == 3 && in_headers) {
                /* the other string of a pair, or an escaped name: skip the rest of the pair */
                while (p < end && *p != ']') p = (*p == '"') ? skip_string(p, end) : p + 1;
            }
            continue;
        }
        if (c == '{' || c == '[') depth++;
        if (c == '}' || c == ']') depth--;
        p++;
    }
    return 0;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void form_decode(facet_buf *out, const char *s, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') c = ' ';
        else if (c == '%' && i + 2 < n && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
            c = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
            i += 2;
        }
        facet_buf_put(out, &c, 1);
    }
}

int facet_form_value(const char *enc, uint32_t len, const char *name, facet_buf *out) {
    uint32_t i = 0;
    while (i < len) {
        uint32_t start = i;
        while (i < len && enc[i] != '&') i++;
        uint32_t eq = start;
        while (eq < i && enc[eq] != '=') eq++;
        facet_buf key = {0, 0, 0};
        form_decode(&key, enc + start, eq - start);
        if (eq > start && same(key.data, key.len, name)) {
            if (eq < i) form_decode(out, enc + eq + 1, i - eq - 1);
            return 1;
        }
        i++;
    }
    return 0;
}

void facet_buf_html(facet_buf *b, const char *s, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '&': facet_buf_str(b, "&amp;"); break;
        case '<': facet_buf_str(b, "&lt;"); break;
        case '>': facet_buf_str(b, "&gt;"); break;
        case '"': facet_buf_str(b, "&quot;"); break;
        case '\'': facet_buf_str(b, "&#39;"); break;
        default: facet_buf_put(b, &s[i], 1);
        }
    }
}

static uint32_t http_header_count;

void facet_http_begin(facet_buf *out, int status) {
    out->len = 0;
    http_header_count = 0;
    facet_buf_str(out, "{\"status\":");
    facet_buf_int(out, status);
    facet_buf_str(out, ",\"headers\":[");
}

static int token_char(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    for (const char *t = "!#$%&'*+-.^_`|~"; *t; t++)
        if (*t == c) return 1;
    return 0;
}

static int lower_equal(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char c = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        if (c != *b) return 0;
    }
    return *a == *b;
}

int facet_http_add_header(facet_buf *out, const char *name, const char *value, uint32_t value_len) {
    static const char *const forbidden[] = {"content-length", "transfer-encoding", "connection", "keep-alive",
                                            "proxy-connection", "te", "trailer", "upgrade", "x-request-id",
                                            "date", "server"};
    uint32_t n = facet_strlen(name);
    if (n == 0 || n > 256 || value_len > 8192 || http_header_count >= 64) return 0;
    for (uint32_t i = 0; i < n; i++)
        if (!token_char(name[i])) return 0;
    for (uint32_t i = 0; i < sizeof forbidden / sizeof forbidden[0]; i++)
        if (lower_equal(name, forbidden[i])) return 0;
    for (uint32_t i = 0; i < value_len; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c >= 0x7f) return 0;
    }
    if (http_header_count++) facet_buf_put(out, ",", 1);
    facet_buf_put(out, "[", 1);
    facet_buf_json_string(out, name, n);
    facet_buf_put(out, ",", 1);
    facet_buf_json_string(out, value, value_len);
    facet_buf_put(out, "]", 1);
    return 1;
}

void facet_http_end_head(facet_buf *out) { facet_buf_str(out, "]}\n"); }

/* The ABI's exports. */
__attribute__((export_name("facet_init"))) void facet_init(void) { facet_app_init(); }

__attribute__((export_name("facet_handle"))) uint64_t facet_handle(const char *ptr, uint32_t len) {
    facet_buf out = {0, 0, 0};
    facet_app_handle(ptr, len, &out);
    request_done = 1;
    return ((uint64_t)(uintptr_t)out.data << 32) | out.len;
}

#ifdef FACET_HTTP
__attribute__((export_name("facet_http"))) uint64_t facet_http(const char *ptr, uint32_t len) {
    facet_buf out = {0, 0, 0};
    facet_http_request req;
    if (facet_http_parse(ptr, len, &req)) {
        facet_app_http(&req, &out);
    } else {
        facet_http_begin(&out, 400);
        facet_http_add_header(&out, "content-type", "text/plain; charset=utf-8", 25);
        facet_http_end_head(&out);
        facet_buf_str(&out, "unreadable request envelope\n");
    }
    request_done = 1;
    return ((uint64_t)(uintptr_t)out.data << 32) | out.len;
}
#endif

__attribute__((export_name("facet_alloc"))) void *facet_alloc_export(uint32_t size) { return facet_alloc(size); }

#endif /* FACET_IMPLEMENTATION */
#endif /* FACET_H */
