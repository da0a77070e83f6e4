/*
 * The canonical JSON text of canonical.py (what PostgreSQL prints for `text::jsonb`), in one pass of C.
 *
 * This is an accelerator for the common case only. canonical.py stays the reference: whenever the input
 * is anything but plain, valid JSON whose canonical text is certain — malformed JSON, invalid UTF-8,
 * `\u0000`, an unpaired surrogate escape, a number with an exponent or a negative zero, a very long
 * number, a duplicate key, nesting deeper than MAX_DEPTH — the functions return None and the caller
 * takes the Python path, which decides (and words the refusal). So this file never has to be right
 * about an edge case: it only has to recognise it. The tests compare both paths on generated and
 * mutated documents and against PostgreSQL itself.
 *
 * Output rules (jsonb's): object keys ordered by UTF-8 byte length, then bytewise; ", " and ": "
 * separators; strings escaped as \" \\ \b \f \n \r \t, other control characters as lower-case \u00XX,
 * everything else literal (escapes in the input are decoded first); numbers as written.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 200
#define MAX_INT_DIGITS 1000 /* Python refuses ints beyond 4300 digits: leave such numbers to it */
#define MAX_DECIMAL_TEXT 64 /* canonical.py prints plain decimals up to 64 characters verbatim */

enum { OK = 0, FALLBACK = 1, NOMEM = -1 };

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

typedef struct {
    const unsigned char *key_in; /* the key in the input when it has no escapes, else NULL: */
    Py_ssize_t key_off;          /* the decoded key in State.keys */
    Py_ssize_t key_len;
    Py_ssize_t seg_off; /* rendered `"key": value`, in State.out */
    Py_ssize_t seg_len;
    const char *key; /* set once the object is complete (the arena no longer moves) */
} Member;

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    Buf out;     /* the rendering */
    Buf keys;    /* decoded object keys, a stack: an object pops what it pushed */
    Buf members; /* Member records, a stack as well */
    Buf text;    /* one decoded string value */
    Buf scratch; /* an object's members while they are put in order */
    int field;   /* 1: every backslash written twice (the row rendering's JSON field) */
    int depth;
} State;

static int reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) {
        return OK;
    }
    Py_ssize_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        return NOMEM;
    }
    b->data = data;
    b->cap = cap;
    return OK;
}

static int put(Buf *b, const void *data, Py_ssize_t n) {
    if (reserve(b, n) != OK) {
        return NOMEM;
    }
    memcpy(b->data + b->len, data, (size_t)n);
    b->len += n;
    return OK;
}

static void skip_space(State *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) {
        s->p++;
    }
}

/* Length of the valid UTF-8 sequence starting at p (strict, as Python decodes), 0 if invalid. */
static int utf8_sequence(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    Py_ssize_t left = end - p;
    if (c >= 0xC2 && c <= 0xDF) {
        return (left >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) {
            return 0;
        }
        if (c == 0xE0 && p[1] < 0xA0) {
            return 0; /* overlong */
        }
        if (c == 0xED && p[1] > 0x9F) {
            return 0; /* UTF-16 surrogate */
        }
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) {
            return 0;
        }
        if (c == 0xF0 && p[1] < 0x90) {
            return 0; /* overlong */
        }
        if (c == 0xF4 && p[1] > 0x8F) {
            return 0; /* beyond U+10FFFF */
        }
        return 4;
    }
    return 0;
}

static int hex4(const unsigned char *p, unsigned int *value) {
    unsigned int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned int)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned int)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned int)(c - 'A' + 10);
        } else {
            return FALLBACK;
        }
    }
    *value = v;
    return OK;
}

/* What a byte inside a JSON string asks of the decoder: 0 copy it, 1 the closing quote, 2 an escape,
 * 3 not allowed raw (a control character, or a byte no valid UTF-8 sequence starts with), 4 the lead
 * byte of a multi-byte UTF-8 sequence. */
static unsigned char string_class[256];

/* Bytes jsonb escapes when it prints a string: control characters, the quote and the backslash. */
static unsigned char needs_escape[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        string_class[c] = c < 0x20 ? 3 : c < 0x80 ? 0 : (c >= 0xC2 && c <= 0xF4) ? 4 : 3;
    }
    string_class['"'] = 1;
    string_class['\\'] = 2;
    for (int c = 0; c < 0x20; c++) {
        needs_escape[c] = 1;
    }
    needs_escape['"'] = 1;
    needs_escape['\\'] = 1;
}

/* The end of the run at p of bytes a string holds as they are printed (printable ASCII other than the
 * quote and the backslash, and valid multi-byte UTF-8); NULL at invalid UTF-8. */
static const unsigned char *plain_run(const unsigned char *p, const unsigned char *end) {
    for (;;) {
        while (p < end && string_class[*p] == 0) {
            p++;
        }
        if (p < end && string_class[*p] == 4) {
            int n = utf8_sequence(p, end);
            if (n == 0) {
                return NULL;
            }
            p += n;
            continue;
        }
        return p;
    }
}

/* Decode the string at s->p (just after its opening quote) into dst. Decoding never lengthens the
 * text (an escape is longer than what it stands for), so dst is sized once. */
static int decode_string(State *s, Buf *dst) {
    const unsigned char *p = s->p;
    const unsigned char *end = s->end;
    if (reserve(dst, end - p) != OK) {
        return NOMEM;
    }
    unsigned char *o = (unsigned char *)dst->data + dst->len;
    for (;;) {
        const unsigned char *run = p;
        p = plain_run(p, end);
        if (p == NULL) {
            return FALLBACK;
        }
        if (p > run) {
            memcpy(o, run, (size_t)(p - run));
            o += p - run;
        }
        if (p >= end) {
            return FALLBACK; /* unterminated */
        }
        unsigned char c = *p;
        if (c == '"') {
            s->p = p + 1;
            dst->len = (char *)o - dst->data;
            return OK;
        }
        if (c != '\\' || end - p < 2) {
            return FALLBACK; /* a raw control character or invalid UTF-8: not for this path */
        }
        char simple = 0;
        switch (p[1]) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': break;
        default: return FALLBACK;
        }
        if (simple) {
            *o++ = (unsigned char)simple;
            p += 2;
            continue;
        }
        unsigned int cp;
        if (end - p < 6 || hex4(p + 2, &cp) != OK) {
            return FALLBACK;
        }
        p += 6;
        if (cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) {
            return FALLBACK; /* \u0000, or a low surrogate on its own */
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned int low;
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low) != OK || low < 0xDC00 ||
                low > 0xDFFF) {
                return FALLBACK; /* an unpaired high surrogate */
            }
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        if (cp < 0x80) {
            *o++ = (unsigned char)cp;
        } else if (cp < 0x800) {
            *o++ = (unsigned char)(0xC0 | (cp >> 6));
            *o++ = (unsigned char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *o++ = (unsigned char)(0xE0 | (cp >> 12));
            *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (unsigned char)(0x80 | (cp & 0x3F));
        } else {
            *o++ = (unsigned char)(0xF0 | (cp >> 18));
            *o++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (unsigned char)(0x80 | (cp & 0x3F));
        }
    }
}

/* Write decoded text as a jsonb string literal. */
static int write_string(State *s, const char *text, Py_ssize_t len) {
    /* worst case: every byte becomes \u00XX with a doubled backslash (7 bytes), plus the quotes */
    if (reserve(&s->out, 7 * len + 2) != OK) {
        return NOMEM;
    }
    char *o = s->out.data + s->out.len;
    const unsigned char *t = (const unsigned char *)text;
    const unsigned char *end = t + len;
    *o++ = '"';
    while (t < end) {
        const unsigned char *run = t;
        while (t < end && !needs_escape[*t]) {
            t++;
        }
        if (t > run) {
            memcpy(o, run, (size_t)(t - run));
            o += t - run;
        }
        if (t >= end) {
            break;
        }
        unsigned char c = *t++;
        *o++ = '\\';
        if (s->field) {
            *o++ = '\\';
        }
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\':
            *o++ = '\\';
            if (s->field) {
                *o++ = '\\';
            }
            break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default: {
            static const char digits[] = "0123456789abcdef";
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = digits[c >> 4];
            *o++ = digits[c & 0xF];
        }
        }
    }
    *o++ = '"';
    s->out.len = o - s->out.data;
    return OK;
}

/* Parse the string at s->p (just after its opening quote). A string without escapes is printed as it
 * is written, so it is not decoded: *verbatim points at it in the input. Otherwise it is decoded into
 * dst (appended) and *verbatim is NULL. */
static int parse_string(State *s, Buf *dst, const unsigned char **verbatim, Py_ssize_t *len) {
    const unsigned char *q = plain_run(s->p, s->end);
    if (q == NULL) {
        return FALLBACK;
    }
    if (q < s->end && *q == '"') {
        *verbatim = s->p;
        *len = q - s->p;
        s->p = q + 1;
        return OK;
    }
    Py_ssize_t start = dst->len;
    int rc = decode_string(s, dst);
    *verbatim = NULL;
    *len = dst->len - start;
    return rc;
}

static int put_quoted(Buf *b, const unsigned char *text, Py_ssize_t len) {
    if (reserve(b, len + 2) != OK) {
        return NOMEM;
    }
    char *o = b->data + b->len;
    o[0] = '"';
    memcpy(o + 1, text, (size_t)len);
    o[len + 1] = '"';
    b->len += len + 2;
    return OK;
}

static int parse_value(State *s);

static int parse_number(State *s) {
    const unsigned char *start = s->p;
    const unsigned char *p = s->p;
    const unsigned char *end = s->end;
    int negative = 0, nonzero = 0, fraction = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9') {
        return FALLBACK;
    }
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
        nonzero = 1;
    }
    if (p < end && *p == '.') {
        fraction = 1;
        p++;
        const unsigned char *digits = p;
        while (p < end && *p >= '0' && *p <= '9') {
            nonzero |= *p != '0';
            p++;
        }
        if (p == digits) {
            return FALLBACK;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        return FALLBACK; /* numeric prints these without the exponent: canonical.py does the arithmetic */
    }
    Py_ssize_t n = p - start;
    if ((negative && !nonzero) || n > (fraction ? MAX_DECIMAL_TEXT : MAX_INT_DIGITS)) {
        return FALLBACK; /* -0 loses its sign; long numbers are left to canonical.py's range checks */
    }
    s->p = p;
    return put(&s->out, start, n);
}

enum { MORE = 2, CLOSED = 3 };

/* After an item of a container: ", " and MORE at a comma, CLOSED at the closing bracket. */
static int after_item(State *s, unsigned char close) {
    skip_space(s);
    if (s->p >= s->end) {
        return FALLBACK;
    }
    if (*s->p == ',') {
        s->p++;
        return put(&s->out, ", ", 2) == OK ? MORE : NOMEM;
    }
    if (*s->p == close) {
        s->p++;
        return CLOSED;
    }
    return FALLBACK;
}

static int compare_members(const void *a, const void *b) {
    const Member *x = a, *y = b;
    if (x->key_len != y->key_len) {
        return x->key_len < y->key_len ? -1 : 1;
    }
    return memcmp(x->key, y->key, (size_t)x->key_len);
}

static int parse_object(State *s) {
    /* s->p is just after '{' */
    if (put(&s->out, "{", 1) != OK) {
        return NOMEM;
    }
    Py_ssize_t keys_mark = s->keys.len;
    Py_ssize_t members_mark = s->members.len;
    Py_ssize_t body = s->out.len;
    skip_space(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return put(&s->out, "}", 1);
    }
    int rc;
    for (;;) {
        skip_space(s);
        if (s->p >= s->end || *s->p != '"') {
            return FALLBACK;
        }
        s->p++;
        Member m;
        m.key_off = s->keys.len;
        m.key = NULL;
        if ((rc = parse_string(s, &s->keys, &m.key_in, &m.key_len)) != OK) {
            return rc;
        }
        skip_space(s);
        if (s->p >= s->end || *s->p != ':') {
            return FALLBACK;
        }
        s->p++;
        m.seg_off = s->out.len;
        rc = m.key_in ? put_quoted(&s->out, m.key_in, m.key_len)
                      : write_string(s, s->keys.data + m.key_off, m.key_len);
        if (rc != OK) {
            return rc;
        }
        if (put(&s->out, ": ", 2) != OK) {
            return NOMEM;
        }
        if ((rc = parse_value(s)) != OK) {
            return rc;
        }
        m.seg_len = s->out.len - m.seg_off;
        if (put(&s->members, &m, sizeof m) != OK) {
            return NOMEM;
        }
        rc = after_item(s, '}');
        if (rc == CLOSED) {
            break;
        }
        if (rc != MORE) {
            return rc;
        }
    }
    Member *members = (Member *)(s->members.data + members_mark);
    Py_ssize_t count = (s->members.len - members_mark) / (Py_ssize_t)sizeof(Member);
    int ordered = 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        members[i].key = members[i].key_in ? (const char *)members[i].key_in : s->keys.data + members[i].key_off;
        if (i && ordered && compare_members(&members[i - 1], &members[i]) >= 0) {
            ordered = 0;
        }
    }
    if (!ordered) {
        if (count <= 64) { /* insertion sort: no allocation, and objects are small */
            for (Py_ssize_t i = 1; i < count; i++) {
                Member m = members[i];
                Py_ssize_t j = i;
                while (j > 0 && compare_members(&members[j - 1], &m) > 0) {
                    members[j] = members[j - 1];
                    j--;
                }
                members[j] = m;
            }
        } else {
            qsort(members, (size_t)count, sizeof(Member), compare_members);
        }
        for (Py_ssize_t i = 1; i < count; i++) {
            if (compare_members(&members[i - 1], &members[i]) == 0) {
                return FALLBACK; /* a duplicate key: jsonb keeps the last one, canonical.py knows how */
            }
        }
        /* Rewrite the body in key order from a copy of it. */
        Py_ssize_t size = s->out.len - body;
        s->scratch.len = 0;
        if (put(&s->scratch, s->out.data + body, size) != OK) {
            return NOMEM;
        }
        char *o = s->out.data + body;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (i) {
                memcpy(o, ", ", 2);
                o += 2;
            }
            memcpy(o, s->scratch.data + (members[i].seg_off - body), (size_t)members[i].seg_len);
            o += members[i].seg_len;
        }
    }
    s->keys.len = keys_mark;
    s->members.len = members_mark;
    return put(&s->out, "}", 1);
}

static int parse_array(State *s) {
    /* s->p is just after '[' */
    if (put(&s->out, "[", 1) != OK) {
        return NOMEM;
    }
    skip_space(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return put(&s->out, "]", 1);
    }
    int rc;
    for (;;) {
        if ((rc = parse_value(s)) != OK) {
            return rc;
        }
        rc = after_item(s, ']');
        if (rc == CLOSED) {
            return put(&s->out, "]", 1);
        }
        if (rc != MORE) {
            return rc;
        }
    }
}

static int literal(State *s, const char *word, Py_ssize_t n) {
    if (s->end - s->p < n || memcmp(s->p, word, (size_t)n) != 0) {
        return FALLBACK;
    }
    s->p += n;
    return put(&s->out, word, n);
}

static int parse_value(State *s) {
    skip_space(s);
    if (s->p >= s->end) {
        return FALLBACK;
    }
    int rc;
    switch (*s->p) {
    case '{':
    case '[':
        if (++s->depth > MAX_DEPTH) {
            return FALLBACK;
        }
        s->p++;
        rc = s->p[-1] == '{' ? parse_object(s) : parse_array(s);
        s->depth--;
        return rc;
    case '"': {
        const unsigned char *verbatim;
        Py_ssize_t len;
        s->p++;
        s->text.len = 0;
        if ((rc = parse_string(s, &s->text, &verbatim, &len)) != OK) {
            return rc;
        }
        return verbatim ? put_quoted(&s->out, verbatim, len) : write_string(s, s->text.data, len);
    }
    case 't': return literal(s, "true", 4);
    case 'f': return literal(s, "false", 5);
    case 'n': return literal(s, "null", 4);
    default: return parse_number(s);
    }
}

/* The buffers outlive a call, so a scan of millions of documents does not allocate per document. A call
 * takes them out of `kept` (leaving empty ones) and hands them back at its end, so even a call made
 * while another is under way (nothing here runs Python code, but to be safe) never shares one. */
static Buf kept[5];
#define KEEP_LIMIT (1 << 20)

static void keep(Buf *b, int i) {
    if (b->cap > KEEP_LIMIT || kept[i].data != NULL) {
        PyMem_Free(b->data); /* too large to keep, or another call's buffer is kept already */
        return;
    }
    b->len = 0;
    kept[i] = *b;
}

static PyObject *render(PyObject *arg, int field) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0) {
        return NULL;
    }
    State s;
    memset(&s, 0, sizeof s);
    Buf *mine[5] = {&s.out, &s.keys, &s.members, &s.text, &s.scratch};
    for (int i = 0; i < 5; i++) {
        *mine[i] = kept[i];
        kept[i] = (Buf){NULL, 0, 0};
    }
    s.p = view.buf;
    s.end = s.p + view.len;
    s.field = field;
    PyObject *result = NULL;
    int rc = OK;
    if (field) {
        rc = put(&s.out, "J", 1);
    }
    if (rc == OK) {
        rc = parse_value(&s);
    }
    if (rc == OK) {
        skip_space(&s);
        if (s.p != s.end) {
            rc = FALLBACK; /* something after the value */
        }
    }
    if (rc == OK && field) {
        rc = put(&s.out, "\\;", 2);
    }
    if (rc == OK) {
        result = PyBytes_FromStringAndSize(s.out.data, s.out.len);
    } else if (rc == FALLBACK) {
        result = Py_NewRef(Py_None);
    }
    for (int i = 0; i < 5; i++) {
        keep(mine[i], i);
    }
    if (rc == NOMEM) {
        PyErr_NoMemory();
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *canonical(PyObject *module, PyObject *arg) {
    return render(arg, 0);
}

static PyObject *json_field(PyObject *module, PyObject *arg) {
    return render(arg, 1);
}

static PyMethodDef methods[] = {
    {"canonical", canonical, METH_O,
     "canonical(data: bytes) -> bytes | None\n\nThe canonical JSON text of UTF-8 JSON `data` (see "
     "canonical.py), or None when canonical.py must decide."},
    {"json_field", json_field, METH_O,
     "json_field(data: bytes) -> bytes | None\n\nThe row-rendering field `J...\\;` of `data` (backslashes "
     "doubled), or None when canonical.py must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jsonb", "Compiled fast path of tg_parser.transfer.canonical.", -1, methods,
};

PyMODINIT_FUNC PyInit__jsonb(void) {
    init_tables();
    return PyModule_Create(&module);
}
