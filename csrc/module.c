/* module.c - the Python boundary: the only file that includes Python or NumPy.
 *
 * Every call follows the same steps: parse arguments, check and coerce them
 * with the GIL held, allocate the output with NumPy, release the GIL around
 * the pure-C work, then turn a failure status into a Python exception.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#include <numpy/arrayobject.h>
#include <pythread.h>

#include "embgemma.h"
#include "platform.h"
#include "testing.h"

static PyObject *EmbGemmaError;     /* base of every error raised here          */
static PyObject *ModelFormatError;  /* a malformed or inconsistent model file   */
static PyObject *UnsupportedModelError; /* a well-formed model we cannot run    */

static PyObject *raise_status(eg_status s, const char *msg) {
    PyObject *type;
    switch (s) {
    case EG_ERR_INVALID_ARG: type = PyExc_ValueError; break;
    case EG_ERR_BAD_FILE: type = ModelFormatError; break;
    case EG_ERR_UNSUPPORTED: type = UnsupportedModelError; break;
    case EG_ERR_IO: type = PyExc_OSError; break;
    case EG_ERR_NOMEM: type = PyExc_MemoryError; break;
    default: type = EmbGemmaError; break;
    }
    /* messages quote file contents and paths, which need not be UTF-8 (or are cut mid-character by
     * a %.40s): decode leniently, else the error would turn into a UnicodeDecodeError */
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "backslashreplace");
    if (text) {
        PyErr_SetObject(type, text);
        Py_DECREF(text);
    }
    return NULL;
}

/* ---------------------------------------------------------------- Model */

typedef struct {
    PyObject_HEAD
    eg_model *model; /* immutable after __init__; shared by concurrent calls */
} ModelObject;

static void Model_dealloc(ModelObject *self) {
    eg_model_free(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* "float32" / "bfloat16" / "int8" / "q8_0" / "q4_0" (/ "auto" where allowed) -> eg_weights;
 * else ValueError naming the argument. */
static int weights_from_name(const char *arg, const char *name, int allow_auto, eg_weights *out) {
    for (int i = 0; i < EG_WEIGHTS_COUNT; i++)
        if (strcmp(name, eg_weights_name((eg_weights)i)) == 0) {
            *out = (eg_weights)i;
            return 1;
        }
    if (allow_auto && strcmp(name, "auto") == 0) {
        *out = EG_WEIGHTS_AUTO;
        return 1;
    }
    PyErr_Format(PyExc_ValueError, "unknown %s '%.40s': use 'float32', 'bfloat16', 'int8', 'q8_0', 'q4_0'%s", arg,
                 name, allow_auto ? " or 'auto'" : "");
    return 0;
}

static int Model_init(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"path", "isa", "mlp_weights", "attn_weights", "dense_from", "no_dense", NULL};
    PyObject *path_obj = NULL, *dense_obj = NULL;
    const char *isa = NULL, *names[2] = {"float32", "float32"};
    int no_dense = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|zssO&p", kwlist, PyUnicode_FSConverter, &path_obj, &isa,
                                     &names[0], &names[1], PyUnicode_FSConverter, &dense_obj, &no_dense))
        return -1;
    eg_weights w[2];
    for (int j = 0; j < 2; j++)
        if (!weights_from_name(kwlist[2 + j], names[j], 1, &w[j])) {
            Py_DECREF(path_obj);
            Py_XDECREF(dense_obj);
            return -1;
        }
    const char *dense_from = dense_obj ? PyBytes_AS_STRING(dense_obj) : NULL;
    if (dense_from && strlen(dense_from) != (size_t)PyBytes_GET_SIZE(dense_obj)) {
        Py_DECREF(path_obj);
        Py_DECREF(dense_obj);
        PyErr_SetString(PyExc_ValueError, "dense_from contains a NUL character");
        return -1;
    }
    eg_load_opts opts = {isa, w[0], w[1], dense_from, no_dense};
    if (self->model) {
        Py_DECREF(path_obj);
        Py_XDECREF(dense_obj);
        PyErr_SetString(PyExc_RuntimeError, "Model is already loaded");
        return -1;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    if (strlen(path) != (size_t)PyBytes_GET_SIZE(path_obj)) {
        Py_DECREF(path_obj);
        Py_XDECREF(dense_obj);
        PyErr_SetString(PyExc_ValueError, "model path contains a NUL character");
        return -1;
    }
    char err[1024] = "";
    eg_model *m = NULL;
    eg_status s;
    Py_BEGIN_ALLOW_THREADS
    s = eg_model_load(path, &opts, &m, err, sizeof err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    Py_XDECREF(dense_obj);
    if (s != EG_OK) {
        raise_status(s, err);
        return -1;
    }
    const char *note = eg_model_get_info(m)->isa_note;
    if (note && strstr(note, "fell back") &&
        PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "embgemma kernels: %s", note) < 0) {
        eg_model_free(m);
        return -1;
    }
    self->model = m;
    return 0;
}

static int check_loaded(ModelObject *self) {
    if (!self->model) {
        PyErr_SetString(PyExc_RuntimeError, "Model was not initialised");
        return 0;
    }
    return 1;
}

/* Once per process: say why a forked child encodes on one thread (eg_forked_single_threaded).
 * 0 when the warning was turned into an exception. */
static int warn_forked(void) {
    static long warned_in;
    if (warned_in == eg_os_pid()) return 1;
    warned_in = eg_os_pid();
    return PyErr_WarnEx(PyExc_RuntimeWarning,
                        "embgemma: this process was forked (multiprocessing's 'fork' start method?) after encoding "
                        "with several threads; GNU OpenMP cannot start threads again in a forked child, so encode "
                        "runs on one thread here. For full speed use the 'spawn' or 'forkserver' start method "
                        "(multiprocessing.get_context('spawn')) and load the model in each worker.",
                        1) == 0;
}

/* ---------------------------------------------------------------- Ctrl-C inside a call
 *
 * Python runs signal handlers only in the main thread, and only when that thread holds the GIL, so
 * a long encode (seconds on one batch) would see Ctrl-C only when it returned. For a call on the
 * main thread the engine polls signals_poll between its steps (on this thread, outside its parallel
 * regions): at most every SIGNALS_POLL_S it takes the GIL back, lets Python run its signal handlers
 * and releases it again. A handler that raised (KeyboardInterrupt) cancels the call: the exception
 * stays set and Model_encode returns NULL. Calls on other threads are not polled (no GIL traffic in
 * servers); a short call (the first poll comes SIGNALS_POLL_S into it) checks once as it returns. */
#define SIGNALS_POLL_S 0.1

typedef struct {
    PyThreadState *ts; /* this thread's state while the GIL is released */
    double next;       /* eg_os_seconds() of the next real poll */
} signals_poll_state;

static int signals_poll(void *arg) {
    signals_poll_state *p = arg;
    if (eg_os_seconds() < p->next) return 0;
    PyEval_RestoreThread(p->ts);
    const int stop = PyErr_CheckSignals() < 0;
    p->ts = PyEval_SaveThread();
    p->next = eg_os_seconds() + SIGNALS_POLL_S;
    return stop;
}

/* 1 on the thread Python delivers signals to (threading.main_thread()); GIL held. */
static int on_main_thread(void) {
    PyObject *name = PyUnicode_FromString("threading"), *threading = NULL, *main = NULL, *ident = NULL;
    int result = 1; /* threading never imported: no threads made by it; let PyErr_CheckSignals decide */
    if (name) threading = PyImport_GetModule(name);
    if (threading) main = PyObject_CallMethod(threading, "main_thread", NULL);
    if (main) ident = PyObject_GetAttrString(main, "ident");
    if (ident && ident != Py_None) result = PyLong_AsUnsignedLong(ident) == PyThread_get_thread_ident();
    PyErr_Clear(); /* any failure above: poll (harmless off the main thread) */
    Py_XDECREF(ident);
    Py_XDECREF(main);
    Py_XDECREF(threading);
    Py_XDECREF(name);
    return result;
}

/* encode(ids, offsets, *, dim=0, normalize=True, threads=1, out=None, rows=None) -> out */
static PyObject *Model_encode(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"ids", "offsets", "dim", "normalize", "threads", "out", "rows", NULL};
    PyObject *ids_obj, *off_obj, *out_obj = Py_None, *rows_obj = Py_None;
    long long dim = 0;
    int normalize = 1, threads = 1;
    if (!check_loaded(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$LpiOO", kwlist, &ids_obj, &off_obj, &dim, &normalize, &threads,
                                     &out_obj, &rows_obj))
        return NULL;
    const eg_model_info *info = eg_model_get_info(self->model);
    if (dim == 0) dim = info->out_dim;

    PyArrayObject *ids = NULL, *offs = NULL, *rows = NULL, *out = NULL;
    PyObject *result = NULL;
    ids = (PyArrayObject *)PyArray_FROM_OTF(ids_obj, NPY_INT32, NPY_ARRAY_IN_ARRAY);
    if (!ids) goto done;
    offs = (PyArrayObject *)PyArray_FROM_OTF(off_obj, NPY_INT64, NPY_ARRAY_IN_ARRAY);
    if (!offs) goto done;
    if (PyArray_NDIM(ids) != 1 || PyArray_NDIM(offs) != 1 || PyArray_DIM(offs, 0) < 1) {
        PyErr_SetString(PyExc_ValueError, "ids must be 1-D and offsets 1-D with n_texts + 1 entries");
        goto done;
    }
    const npy_intp n_ids = PyArray_DIM(ids, 0), n = PyArray_DIM(offs, 0) - 1;
    const int64_t *o = (const int64_t *)PyArray_DATA(offs);
    if (o[0] < 0 || o[n] > n_ids) {
        PyErr_Format(PyExc_ValueError, "offsets must lie within 0..%zd", (Py_ssize_t)n_ids);
        goto done;
    }
    for (npy_intp i = 0; i < n; i++) {
        if (o[i + 1] < o[i]) {
            PyErr_Format(PyExc_ValueError, "offsets must be non-decreasing (offsets[%zd] > offsets[%zd])",
                         (Py_ssize_t)i, (Py_ssize_t)(i + 1));
            goto done;
        }
    }
    if (dim < 1 || dim > info->out_dim) {
        PyErr_Format(PyExc_ValueError, "dim must be between 1 and %lld, got %lld", (long long)info->out_dim, dim);
        goto done;
    }
    if (threads < 1 || threads > 4096) { /* eg_encode's range, checked even for no texts */
        PyErr_Format(PyExc_ValueError, "threads must be 1..4096, got %d", threads);
        goto done;
    }
    if (out_obj == Py_None) {
        if (rows_obj != Py_None) {
            PyErr_SetString(PyExc_ValueError, "rows needs out");
            goto done;
        }
        npy_intp shape[2] = {n, (npy_intp)dim};
        out = (PyArrayObject *)PyArray_EMPTY(2, shape, NPY_FLOAT32, 0);
        if (!out) goto done;
    } else {
        if (!PyArray_Check(out_obj)) {
            PyErr_SetString(PyExc_TypeError, "out must be a numpy.ndarray");
            goto done;
        }
        out = (PyArrayObject *)out_obj;
        Py_INCREF(out);
        if (PyArray_TYPE(out) != NPY_FLOAT32 || PyArray_NDIM(out) != 2 || !PyArray_IS_C_CONTIGUOUS(out) ||
            !PyArray_ISWRITEABLE(out) || PyArray_DIM(out, 1) != dim) {
            PyErr_Format(PyExc_ValueError, "out must be a writeable C-contiguous float32 array of shape (N, %lld)", dim);
            goto done;
        }
        if (rows_obj != Py_None) {
            rows = (PyArrayObject *)PyArray_FROM_OTF(rows_obj, NPY_INT64, NPY_ARRAY_IN_ARRAY);
            if (!rows) goto done;
            if (PyArray_NDIM(rows) != 1 || PyArray_DIM(rows, 0) != n) {
                PyErr_SetString(PyExc_ValueError, "rows must be 1-D with one entry per text");
                goto done;
            }
            const int64_t *r = (const int64_t *)PyArray_DATA(rows);
            for (npy_intp i = 0; i < n; i++) {
                if (r[i] < 0 || r[i] >= PyArray_DIM(out, 0)) {
                    PyErr_Format(PyExc_ValueError, "rows[%zd] = %lld is outside out's %zd rows", (Py_ssize_t)i,
                                 (long long)r[i], (Py_ssize_t)PyArray_DIM(out, 0));
                    goto done;
                }
            }
        } else if (PyArray_DIM(out, 0) < n) {
            PyErr_SetString(PyExc_ValueError, "out has fewer rows than there are texts");
            goto done;
        }
    }

    if (threads > 1 && eg_forked_single_threaded() && !warn_forked()) goto done;
    eg_encode_opts opts = {.dim = dim, .normalize = normalize, .n_threads = threads};
    signals_poll_state poll = {NULL, 0.0};
    if (n > 0 && on_main_thread()) {
        opts.cancel = signals_poll;
        opts.cancel_arg = &poll;
    }
    char err[1024] = "";
    eg_status s;
    const int32_t *idp = (const int32_t *)PyArray_DATA(ids);
    float *outp = (float *)PyArray_DATA(out);
    const int64_t *rp = rows ? (const int64_t *)PyArray_DATA(rows) : NULL;
    poll.ts = PyEval_SaveThread();
    poll.next = eg_os_seconds() + SIGNALS_POLL_S;
    s = eg_encode(self->model, idp, o, n, &opts, outp, dim, rp, err, sizeof err);
    PyEval_RestoreThread(poll.ts);
    if (s == EG_ERR_CANCELLED && PyErr_Occurred()) goto done; /* a signal handler's exception */
    /* A signal caught during the call by another thread (the kernel may pick any thread that does
     * not block it) need not wake this thread's eval loop: ask for it here, so a run of short calls
     * sees Ctrl-C as the call it arrived in returns. */
    if (s == EG_OK && opts.cancel && PyErr_CheckSignals() < 0) goto done;
    if (s != EG_OK) {
        raise_status(s, err);
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(ids);
    Py_XDECREF(offs);
    Py_XDECREF(rows);
    Py_XDECREF(out);
    return result;
}

/* _test_encode(data) -> None: one eg_encode call decoded from fuzz bytes and checked against the C
 * contract (eg_test_encode); the encode fuzzer's corpus is replayed through it. */
static PyObject *Model_test_encode(ModelObject *self, PyObject *args) {
    Py_buffer buf;
    if (!check_loaded(self) || !PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    char err[1024] = "";
    eg_status s;
    Py_BEGIN_ALLOW_THREADS
    s = eg_test_encode(self->model, buf.buf, (size_t)buf.len, err, sizeof err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (s != EG_OK) return raise_status(s, err);
    Py_RETURN_NONE;
}

static PyObject *Model_get_info(ModelObject *self, void *closure) {
    (void)closure;
    if (!check_loaded(self)) return NULL;
    const eg_model_info *i = eg_model_get_info(self->model);
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:O,s:s,s:s,s:s,s:s,s:L,s:s,s:s}",
                         "hidden_size", i->hidden,
                         "num_hidden_layers", i->n_layers, "num_attention_heads", i->n_heads, "num_key_value_heads",
                         i->n_kv_heads, "head_dim", i->head_dim, "intermediate_size", i->intermediate, "vocab_size",
                         i->vocab, "max_positions", i->max_positions, "sliding_window", i->sliding_window,
                         "window_radius", i->window_radius, "n_dense", i->n_dense, "output_dim", i->out_dim,
                         "normalize", i->normalize ? Py_True : Py_False, "isa", eg_isa_name(i->isa), "weight_dtype",
                         i->weight_dtype, "mlp_weights", eg_weights_name(i->mlp_weights), "attn_weights",
                         eg_weights_name(i->attn_weights), "weight_bytes", i->weight_bytes, "format", i->format,
                         "isa_note", i->isa_note ? i->isa_note : "");
}

static PyMethodDef Model_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Model_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(ids, offsets, *, dim=0, normalize=True, threads=1, out=None, rows=None) -> ndarray\n\n"
     "Embed the token sequences ids[offsets[i]:offsets[i+1]]; writes row i to out[rows[i]]."},
    {"_test_encode", (PyCFunction)Model_test_encode, METH_VARARGS,
     "testing hook: one eg_encode call decoded from fuzz bytes, checked against the C contract"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Model_getset[] = {
    {"info", (getter)Model_get_info, NULL, "architecture and pipeline of the loaded model", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "embgemma._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(path, isa=None): an EmbeddingGemma model loaded from a sentence-transformers folder.",
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
    .tp_init = (initproc)Model_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------- module */

static PyObject *build_info(PyObject *mod, PyObject *noargs) {
    (void)mod;
    (void)noargs;
    PyObject *compiled = PyList_New(0), *supported = PyList_New(0), *checks = PyDict_New();
    if (!compiled || !supported || !checks) goto fail;
    for (int i = 0; i < EG_ISA_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(eg_isa_name((eg_isa)i));
        if (!name) goto fail;
        int bad = (eg_isa_compiled((eg_isa)i) && PyList_Append(compiled, name)) ||
                  (eg_isa_supported((eg_isa)i) && PyList_Append(supported, name));
        if (!bad && eg_isa_supported((eg_isa)i)) { /* the load-time self-check's verdict */
            char why[200];
            int ok;
            Py_BEGIN_ALLOW_THREADS
            ok = eg_isa_selfcheck((eg_isa)i, why, sizeof why);
            Py_END_ALLOW_THREADS
            PyObject *v = PyUnicode_DecodeUTF8(ok ? "passed" : why, (Py_ssize_t)strlen(ok ? "passed" : why), "replace");
            bad = !v || PyDict_SetItem(checks, name, v) < 0;
            Py_XDECREF(v);
        }
        Py_DECREF(name);
        if (bad) goto fail;
    }
    char note[320], err[256];
    eg_isa chosen;
    if (eg_isa_choose(NULL, &chosen, note, sizeof note, err, sizeof err) != EG_OK) {
        snprintf(note, sizeof note, "%s", err);
        chosen = EG_ISA_SCALAR;
    }
    return Py_BuildValue("{s:s,s:N,s:N,s:s,s:s,s:s,s:N,s:s,s:O,s:i}", "version", EG_VERSION, "compiled_isas", compiled,
                         "supported_isas", supported, "best_isa", eg_isa_name(eg_isa_best()), "chosen_isa",
                         eg_isa_name(chosen), "isa_note", note, "selfcheck", checks, "cpu_features",
                         eg_cpu_features(), "openmp", eg_openmp_enabled() ? Py_True : Py_False, "omp_num_procs",
                         eg_default_threads());
fail:
    Py_XDECREF(compiled);
    Py_XDECREF(supported);
    Py_XDECREF(checks);
    return NULL;
}

/* ---------------------------------------------------------------- test hooks */

static int isa_from_name(const char *name, eg_isa *out) {
    for (int i = 0; i < EG_ISA_COUNT; i++) {
        if (strcmp(name, eg_isa_name((eg_isa)i)) == 0) {
            *out = (eg_isa)i;
            return 1;
        }
    }
    PyErr_Format(PyExc_ValueError, "unknown ISA \"%s\"", name);
    return 0;
}

/* A float32 2-D array whose rows are contiguous (any row stride, any alignment). */
static int row_matrix(PyObject *o, const char *what, int writeable, int64_t *rows, int64_t *cols, int64_t *ld) {
    if (!PyArray_Check(o) || PyArray_TYPE((PyArrayObject *)o) != NPY_FLOAT32 || PyArray_NDIM((PyArrayObject *)o) != 2 ||
        PyArray_STRIDE((PyArrayObject *)o, 1) != 4 || PyArray_STRIDE((PyArrayObject *)o, 0) % 4 != 0 ||
        (writeable && !PyArray_ISWRITEABLE((PyArrayObject *)o))) {
        PyErr_Format(PyExc_ValueError, "%s must be a 2-D float32 array with contiguous rows", what);
        return 0;
    }
    *rows = PyArray_DIM((PyArrayObject *)o, 0);
    *cols = PyArray_DIM((PyArrayObject *)o, 1);
    *ld = PyArray_STRIDE((PyArrayObject *)o, 0) / 4;
    return 1;
}

/* _test_gemm(isa, x, w, y, weights="float32", pack=-1): y = x . w^T with the kernel of `isa`, w
 * packed as `weights` (rows may be strided/unaligned) for the kernels `pack` names (eg_test_gemm):
 * -1 as the loader does for `isa`; else 1 (int16 pair sums, AVX2's value ranges) + 2 (bfloat16 x
 * bfloat16 activations, vdpbf16ps) or 4 (the same on AMX tiles). */
static PyObject *test_gemm(PyObject *mod, PyObject *args) {
    const char *isa_name, *wname = "float32";
    PyObject *x, *w, *y;
    eg_isa isa;
    int pairs16 = -1;
    int64_t m, k, ldx, n, kw, ldw, my, ny, ldy;
    if (!PyArg_ParseTuple(args, "sOOO|si", &isa_name, &x, &w, &y, &wname, &pairs16) || !isa_from_name(isa_name, &isa))
        return NULL;
    eg_weights wt;
    if (!weights_from_name("weights", wname, 0, &wt)) return NULL;
    if (!row_matrix(x, "x", 0, &m, &k, &ldx) || !row_matrix(w, "w", 0, &n, &kw, &ldw) ||
        !row_matrix(y, "y", 1, &my, &ny, &ldy))
        return NULL;
    if (kw != k || my != m || ny != n || ldw != k) {
        PyErr_SetString(PyExc_ValueError, "shapes: x (m, k), w (n, k) C-contiguous, y (m, n)");
        return NULL;
    }
    char err[256] = "";
    eg_status s = eg_test_gemm(isa, wt, pairs16, PyArray_DATA((PyArrayObject *)x), ldx, m,
                               PyArray_DATA((PyArrayObject *)w), n, k, PyArray_DATA((PyArrayObject *)y), ldy, err,
                               sizeof err);
    if (s != EG_OK) return raise_status(s, err);
    Py_RETURN_NONE;
}

/* _test_vec(isa, op, a, x, y) -> float: op 1 y += a x; 2 y *= a; 3 y = gelu_tanh(y) * x; 4 y = exp(y - a), sum. */
static PyObject *test_vec(PyObject *mod, PyObject *args) {
    const char *isa_name;
    int op;
    float a;
    PyObject *x, *y;
    eg_isa isa;
    if (!PyArg_ParseTuple(args, "sifOO", &isa_name, &op, &a, &x, &y) || !isa_from_name(isa_name, &isa)) return NULL;
    if (!PyArray_Check(x) || !PyArray_Check(y) || PyArray_TYPE((PyArrayObject *)x) != NPY_FLOAT32 ||
        PyArray_TYPE((PyArrayObject *)y) != NPY_FLOAT32 || PyArray_NDIM((PyArrayObject *)x) != 1 ||
        PyArray_NDIM((PyArrayObject *)y) != 1 || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)x) ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)y) || !PyArray_ISWRITEABLE((PyArrayObject *)y) ||
        PyArray_DIM((PyArrayObject *)x, 0) != PyArray_DIM((PyArrayObject *)y, 0)) {
        PyErr_SetString(PyExc_ValueError, "x and y must be equal-length contiguous 1-D float32 arrays");
        return NULL;
    }
    char err[256] = "";
    float result = 0.0f;
    eg_status s = eg_test_vec(isa, op, a, PyArray_DATA((PyArrayObject *)x), PyArray_DATA((PyArrayObject *)y),
                              PyArray_DIM((PyArrayObject *)x, 0), &result, err, sizeof err);
    if (s != EG_OK) return raise_status(s, err);
    return PyFloat_FromDouble(result);
}

/* ---------------------------------------------------------------- GGUF inspection */

/* Metadata value i as a Python object: numbers, bools and strings as themselves; arrays of
 * numbers as NumPy arrays, arrays of strings as lists of str. */
static PyObject *gguf_value(const eg_gguf *g, int64_t i) {
    const char *key;
    int type, at;
    uint64_t n;
    eg_gguf_meta(g, i, &key, &type, &at, &n);
    if (at == 8) { /* strings */
        const char **ptrs = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *ptrs);
        uint64_t *lens = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *lens);
        PyObject *out = NULL;
        if (!ptrs || !lens) {
            PyErr_NoMemory();
            goto strings_done;
        }
        eg_gguf_meta_strings(g, i, ptrs, lens);
        if (type != 9) {
            out = PyUnicode_DecodeUTF8(ptrs[0], (Py_ssize_t)lens[0], "replace");
            goto strings_done;
        }
        out = PyList_New((Py_ssize_t)n);
        for (uint64_t j = 0; out && j < n; j++) {
            PyObject *sobj = PyUnicode_DecodeUTF8(ptrs[j], (Py_ssize_t)lens[j], "replace");
            if (!sobj) Py_CLEAR(out);
            else PyList_SET_ITEM(out, (Py_ssize_t)j, sobj);
        }
    strings_done:
        PyMem_Free(ptrs);
        PyMem_Free(lens);
        return out;
    }
    const int is_float = at == 6 || at == 12, is_bool = at == 7;
    if (type != 9) {
        if (is_float) return PyFloat_FromDouble(eg_gguf_meta_float(g, i, 0));
        if (is_bool) return PyBool_FromLong((long)eg_gguf_meta_int(g, i, 0));
        if (at == 10) return PyLong_FromUnsignedLongLong((unsigned long long)eg_gguf_meta_int(g, i, 0));
        return PyLong_FromLongLong(eg_gguf_meta_int(g, i, 0));
    }
    static const int np_types[] = {NPY_UINT8, NPY_INT8,  NPY_UINT16, NPY_INT16, NPY_UINT32, NPY_INT32, NPY_FLOAT32,
                                   NPY_BOOL,  -1,        -1,         NPY_UINT64, NPY_INT64, NPY_FLOAT64};
    npy_intp dims[1] = {(npy_intp)n};
    PyArrayObject *arr = (PyArrayObject *)PyArray_SimpleNew(1, dims, np_types[at]);
    if (!arr) return NULL;
    char *dst = PyArray_DATA(arr);
    for (uint64_t j = 0; j < n; j++) {
        switch (at) {
        case 6: ((float *)dst)[j] = (float)eg_gguf_meta_float(g, i, j); break;
        case 12: ((double *)dst)[j] = eg_gguf_meta_float(g, i, j); break;
        case 7: ((npy_bool *)dst)[j] = eg_gguf_meta_int(g, i, j) != 0; break;
        case 0: ((uint8_t *)dst)[j] = (uint8_t)eg_gguf_meta_int(g, i, j); break;
        case 1: ((int8_t *)dst)[j] = (int8_t)eg_gguf_meta_int(g, i, j); break;
        case 2: ((uint16_t *)dst)[j] = (uint16_t)eg_gguf_meta_int(g, i, j); break;
        case 3: ((int16_t *)dst)[j] = (int16_t)eg_gguf_meta_int(g, i, j); break;
        case 4: ((uint32_t *)dst)[j] = (uint32_t)eg_gguf_meta_int(g, i, j); break;
        case 5: ((int32_t *)dst)[j] = (int32_t)eg_gguf_meta_int(g, i, j); break;
        case 10: ((uint64_t *)dst)[j] = (uint64_t)eg_gguf_meta_int(g, i, j); break;
        default: ((int64_t *)dst)[j] = eg_gguf_meta_int(g, i, j); break;
        }
    }
    return (PyObject *)arr;
}

/* gguf_read(path) -> {"metadata": {key: value}, "tensors": [(name, type, shape)]} of a validated GGUF. */
static PyObject *gguf_read(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *path_obj;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &path_obj)) return NULL;
    const char *path = PyBytes_AS_STRING(path_obj);
    if (strlen(path) != (size_t)PyBytes_GET_SIZE(path_obj)) {
        Py_DECREF(path_obj);
        PyErr_SetString(PyExc_ValueError, "path contains a NUL character");
        return NULL;
    }
    char err[1024] = "";
    eg_gguf *g = NULL;
    eg_status s;
    Py_BEGIN_ALLOW_THREADS
    s = eg_gguf_open(path, &g, err, sizeof err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (s != EG_OK) return raise_status(s, err);
    PyObject *meta = PyDict_New(), *tensors = PyList_New(0), *result = NULL;
    if (!meta || !tensors) goto done;
    for (int64_t i = 0; i < eg_gguf_meta_count(g); i++) {
        const char *key;
        int type, at;
        uint64_t n;
        eg_gguf_meta(g, i, &key, &type, &at, &n);
        PyObject *v = gguf_value(g, i);
        if (!v || PyDict_SetItemString(meta, key, v) < 0) {
            Py_XDECREF(v);
            goto done;
        }
        Py_DECREF(v);
    }
    for (int64_t i = 0; i < eg_gguf_tensor_count(g); i++) {
        const char *name, *tname;
        int nd;
        int64_t shape[4];
        eg_gguf_tensor(g, i, &name, &tname, &nd, shape);
        PyObject *shp = PyTuple_New(nd);
        if (!shp) goto done;
        for (int d = 0; d < nd; d++) PyTuple_SET_ITEM(shp, d, PyLong_FromLongLong(shape[d]));
        PyObject *row = Py_BuildValue("(ssN)", name, tname, shp);
        if (!row || PyList_Append(tensors, row) < 0) {
            Py_XDECREF(row);
            goto done;
        }
        Py_DECREF(row);
    }
    result = Py_BuildValue("{s:O,s:O}", "metadata", meta, "tensors", tensors);
done:
    Py_XDECREF(meta);
    Py_XDECREF(tensors);
    eg_gguf_close(g);
    return result;
}

/* _test_parse(kind, data) -> None: runs the safetensors-header ("safetensors"), GGUF ("gguf") or
 * model-folder JSON ("config") readers on bytes in memory (fuzzing and corruption tests); raises
 * what loading would. */
static PyObject *test_parse(PyObject *mod, PyObject *args) {
    (void)mod;
    const char *kind;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "sy*", &kind, &buf)) return NULL;
    char err[1024] = "";
    eg_status s;
    Py_BEGIN_ALLOW_THREADS
    s = eg_test_parse(kind, buf.buf, (size_t)buf.len, err, sizeof err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (s != EG_OK) return raise_status(s, err);
    Py_RETURN_NONE;
}

/* fma_peak(threads=0, seconds=0.5) -> float: GFLOP/s of float32 FMA on `threads` threads (0: all cores). */
static PyObject *fma_peak(PyObject *mod, PyObject *args, PyObject *kwds) {
    (void)mod;
    static char *kwlist[] = {"threads", "seconds", NULL};
    int threads = 0;
    double seconds = 0.5;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|id", kwlist, &threads, &seconds)) return NULL;
    if (threads < 0 || threads > 4096 || !(seconds > 0.0 && seconds <= 60.0)) {
        PyErr_SetString(PyExc_ValueError, "threads must be 0..4096 and seconds in (0, 60]");
        return NULL;
    }
    if (threads == 0) threads = eg_default_threads();
    double g;
    Py_BEGIN_ALLOW_THREADS
    g = eg_fma_peak(threads, seconds);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(g);
}

static PyMethodDef module_methods[] = {
    {"fma_peak", (PyCFunction)(void (*)(void))fma_peak, METH_VARARGS | METH_KEYWORDS,
     "fma_peak(threads=0, seconds=0.5) -> float: measured float32 FMA GFLOP/s of this machine (the GEMM ceiling)."},
    {"build_info", build_info, METH_NOARGS, "build_info() -> dict: version, ISAs compiled and supported, OpenMP."},
    {"_test_gemm", test_gemm, METH_VARARGS, "testing hook: y = x . w^T with one ISA's GEMM kernel"},
    {"gguf_read", gguf_read, METH_VARARGS,
     "gguf_read(path) -> dict: the validated metadata and tensor list of a GGUF file"},
    {"_test_parse", test_parse, METH_VARARGS, "testing hook: run the 'safetensors', 'gguf' or 'config' parsers on bytes"},
    {"_test_vec", test_vec, METH_VARARGS, "testing hook: axpy / scale / gelu_gate / exp_sub with one ISA's kernel"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "embgemma._core", "C engine of embgemma (see embgemma.EmbeddingGemma).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
#ifdef Py_GIL_DISABLED
    PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED);
#endif
    if (PyType_Ready(&ModelType) < 0) goto fail;
    EmbGemmaError = PyErr_NewExceptionWithDoc("embgemma.EmbGemmaError", "Base class of embgemma's errors.", NULL, NULL);
    if (!EmbGemmaError) goto fail;
    PyObject *bases = PyTuple_Pack(2, EmbGemmaError, PyExc_ValueError);
    if (!bases) goto fail;
    ModelFormatError = PyErr_NewExceptionWithDoc("embgemma.ModelFormatError",
                                                 "A model file is malformed, truncated or inconsistent.", bases, NULL);
    UnsupportedModelError = PyErr_NewExceptionWithDoc(
        "embgemma.UnsupportedModelError", "A well-formed model that embgemma cannot run exactly.", bases, NULL);
    Py_DECREF(bases);
    if (!ModelFormatError || !UnsupportedModelError) goto fail;
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&ModelType) < 0) goto fail;
    Py_INCREF(EmbGemmaError);
    Py_INCREF(ModelFormatError);
    Py_INCREF(UnsupportedModelError);
    if (PyModule_AddObject(m, "EmbGemmaError", EmbGemmaError) < 0 ||
        PyModule_AddObject(m, "ModelFormatError", ModelFormatError) < 0 ||
        PyModule_AddObject(m, "UnsupportedModelError", UnsupportedModelError) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
