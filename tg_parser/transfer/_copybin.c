/*
 * Binary COPY tuples for a batch of rows, in one call: the compiled twin of rowcode.binary_encoder.
 *
 * encode(rows, kinds, offset) -> bytes
 *   rows    a list of tuples as SQLite returns them for the feed (see introspect.sqlite_feed_sql)
 *   kinds   one byte per column: 'q' bigint, 'i' integer, 'h' smallint, 't' timestamp (microseconds
 *           since 2000-01-01, sent as int8), 'b' boolean, 'd' double, 's' text, 'j' jsonb
 *   offset  where the columns start in each tuple
 *
 * For the rows the feed hands over (tuples of None, int, float and bytes) the output equals
 * b"".join(map(rowcode.binary_encoder(table, offset), rows)), and a batch that encoder refuses raises
 * here as well (TypeError, OverflowError): text and JSON must be bytes, integers ints within their
 * column's range, doubles real numbers; a boolean is the truth of its value. The tests hold the two to
 * that. The list is copied first: a value's truth or float conversion may run Python code, which must
 * not be able to change the rows between sizing the output and writing it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static void put_be16(unsigned char *o, uint16_t v) {
    o[0] = (unsigned char)(v >> 8);
    o[1] = (unsigned char)v;
}

static void put_be32(unsigned char *o, uint32_t v) {
    o[0] = (unsigned char)(v >> 24);
    o[1] = (unsigned char)(v >> 16);
    o[2] = (unsigned char)(v >> 8);
    o[3] = (unsigned char)v;
}

static void put_be64(unsigned char *o, uint64_t v) {
    put_be32(o, (uint32_t)(v >> 32));
    put_be32(o + 4, (uint32_t)v);
}

/* An int of the given byte width, or -1 with an exception set. */
static int integer(PyObject *value, int width, long long *out) {
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "an integer column holds %.50s", Py_TYPE(value)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    long long low = width == 2 ? INT16_MIN : width == 4 ? INT32_MIN : INT64_MIN;
    long long high = width == 2 ? INT16_MAX : width == 4 ? INT32_MAX : INT64_MAX;
    if (overflow || v < low || v > high) {
        PyErr_Format(PyExc_OverflowError, "integer out of range for a %d-byte column", width);
        return -1;
    }
    *out = v;
    return 0;
}

/* Bytes one value takes (its 4-byte length included), or -1 with an exception set. */
static Py_ssize_t value_size(PyObject *value, char kind) {
    if (value == Py_None) {
        return 4;
    }
    long long ignored;
    switch (kind) {
    case 'q':
    case 't': return integer(value, 8, &ignored) ? -1 : 12;
    case 'i': return integer(value, 4, &ignored) ? -1 : 8;
    case 'h': return integer(value, 2, &ignored) ? -1 : 6;
    case 'b': return 5;
    case 'd': {
        double d = PyFloat_AsDouble(value);
        return (d == -1.0 && PyErr_Occurred()) ? -1 : 12;
    }
    case 's':
    case 'j':
        if (!PyBytes_Check(value)) {
            PyErr_Format(PyExc_TypeError, "a text column holds %.50s, not bytes", Py_TYPE(value)->tp_name);
            return -1;
        }
        if (PyBytes_GET_SIZE(value) > INT32_MAX - (kind == 'j')) {
            PyErr_SetString(PyExc_OverflowError, "a value beyond 2 GiB cannot be sent in one field");
            return -1;
        }
        return 4 + (kind == 'j') + PyBytes_GET_SIZE(value);
    default: PyErr_Format(PyExc_ValueError, "unknown column kind %c", kind); return -1;
    }
}

/* Write one value (already checked by value_size); returns the position after it. */
static unsigned char *write_value(unsigned char *o, PyObject *value, char kind) {
    if (value == Py_None) {
        put_be32(o, 0xFFFFFFFFu);
        return o + 4;
    }
    long long v = 0;
    switch (kind) {
    case 'q':
    case 't':
        integer(value, 8, &v);
        put_be32(o, 8);
        put_be64(o + 4, (uint64_t)v);
        return o + 12;
    case 'i':
        integer(value, 4, &v);
        put_be32(o, 4);
        put_be32(o + 4, (uint32_t)v);
        return o + 8;
    case 'h':
        integer(value, 2, &v);
        put_be32(o, 2);
        put_be16(o + 4, (uint16_t)v);
        return o + 6;
    case 'd': {
        double d = PyFloat_AsDouble(value);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        put_be32(o, 8);
        put_be64(o + 4, bits);
        return o + 12;
    }
    default: { /* 's', 'j' */
        Py_ssize_t n = PyBytes_GET_SIZE(value);
        int json = kind == 'j';
        put_be32(o, (uint32_t)(n + json));
        o += 4;
        if (json) {
            *o++ = 1; /* jsonb's binary format: version 1, then the text */
        }
        memcpy(o, PyBytes_AS_STRING(value), (size_t)n);
        return o + n;
    }
    }
}

static PyObject *encode_batch(PyObject *rows, const char *kinds, Py_ssize_t columns, Py_ssize_t offset);

static PyObject *encode(PyObject *module, PyObject *args) {
    PyObject *rows;
    const char *kinds;
    Py_ssize_t columns, offset;
    if (!PyArg_ParseTuple(args, "O!y#n:encode", &PyList_Type, &rows, &kinds, &columns, &offset)) {
        return NULL;
    }
    if (offset < 0 || columns > INT16_MAX || offset > PY_SSIZE_T_MAX - columns) {
        PyErr_SetString(PyExc_ValueError, "bad offset or column count");
        return NULL;
    }
    PyObject *batch = PyList_GetSlice(rows, 0, PyList_GET_SIZE(rows));
    if (batch == NULL) {
        return NULL;
    }
    PyObject *result = encode_batch(batch, kinds, columns, offset);
    Py_DECREF(batch);
    return result;
}

static PyObject *encode_batch(PyObject *rows, const char *kinds, Py_ssize_t columns, Py_ssize_t offset) {
    Py_ssize_t count = PyList_GET_SIZE(rows);
    Py_ssize_t total = 0;
    /* Pass 1: check every value and size the output; the booleans' truth is taken here too. */
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < offset + columns) {
            PyErr_SetString(PyExc_TypeError, "each row must be a tuple holding every column");
            return NULL;
        }
        total += 2;
        for (Py_ssize_t c = 0; c < columns; c++) {
            PyObject *value = PyTuple_GET_ITEM(row, offset + c);
            if (kinds[c] == 'b' && value != Py_None && PyObject_IsTrue(value) < 0) {
                return NULL;
            }
            Py_ssize_t size = value_size(value, kinds[c]);
            if (size < 0) {
                return NULL;
            }
            if (size > PY_SSIZE_T_MAX - 2 - total) {
                PyErr_SetString(PyExc_OverflowError, "the batch is too large to encode");
                return NULL;
            }
            total += size;
        }
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(result);
    /* Pass 2: write. The values were checked; only Python code run by a value's truth or float
     * conversion could still fail (never for the values SQLite returns). */
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        put_be16(o, (uint16_t)columns);
        o += 2;
        for (Py_ssize_t c = 0; c < columns; c++) {
            PyObject *value = PyTuple_GET_ITEM(row, offset + c);
            if (kinds[c] == 'b' && value != Py_None) {
                int truth = PyObject_IsTrue(value);
                if (truth < 0) {
                    Py_DECREF(result);
                    return NULL;
                }
                put_be32(o, 1);
                o[4] = (unsigned char)truth;
                o += 5;
                continue;
            }
            o = write_value(o, value, kinds[c]);
            if (PyErr_Occurred()) {
                Py_DECREF(result);
                return NULL;
            }
        }
    }
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS,
     "encode(rows: list[tuple], kinds: bytes, offset: int) -> bytes\n\nThe binary COPY tuples of a batch "
     "of rows (see the module source for the kinds)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_copybin", "Compiled binary COPY encoder of tg_parser.transfer.rowcode.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__copybin(void) {
    return PyModule_Create(&module);
}
