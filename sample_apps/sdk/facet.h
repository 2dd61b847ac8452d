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

/* The ABI's exports. */
__attribute__((export_name("facet_init"))) void facet_init(void) { facet_app_init(); }

__attribute__((export_name("facet_handle"))) uint64_t facet_handle(const char *ptr, uint32_t len) {
    facet_buf out = {0, 0, 0};
    facet_app_handle(ptr, len, &out);
    request_done = 1;
    return ((uint64_t)(uintptr_t)out.data << 32) | out.len;
}

__attribute__((export_name("facet_alloc"))) void *facet_alloc_export(uint32_t size) { return facet_alloc(size); }

#endif /* FACET_IMPLEMENTATION */
#endif /* FACET_H */
