/* acc += lut[frame], the inner loop of linear-light window averaging.
 *
 * OpenCV's LUT does one scalar table load per byte and then a separate pass adds the float
 * frame into the accumulator; here both are one pass, and on AVX2 machines the compiler turns
 * the table loads into vector gathers (gcc target_clones picks the variant at load time).
 * At 1080p the pass is bound by memory: the float accumulator is 4x the frame, read and written
 * for every frame. accumulate_many, which blurforge.averaging uses, adds up to MAX_FRAMES frames in
 * one pass over it; accumulate (one frame) stays for the trees before it that bench/extract.py
 * --baseline runs with this build's kernel.
 * blurforge.averaging falls back to OpenCV when this module was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

CLONES
static void add_lut(float *restrict acc, const uint8_t *restrict x, const float *restrict lut, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        acc[i] += lut[x[i]];
}

#define MAX_FRAMES 4

/* acc = (start ? 0 : acc) + lut[0][x[0]] + ... + lut[k-1][x[k-1]], the frames summed first, in order */
CLONES
static void add_luts(float *restrict acc, const uint8_t *const *x, const float *const *lut, int k, int start,
                     Py_ssize_t n)
{
    const uint8_t *x0 = x[0], *x1 = x[k > 1 ? 1 : 0], *x2 = x[k > 2 ? 2 : 0], *x3 = x[k > 3 ? 3 : 0];
    const float *l0 = lut[0], *l1 = lut[k > 1 ? 1 : 0], *l2 = lut[k > 2 ? 2 : 0], *l3 = lut[k > 3 ? 3 : 0];
    switch (k * 2 + (start != 0)) {
    case 2: for (Py_ssize_t i = 0; i < n; i++) acc[i] += l0[x0[i]]; break;
    case 3: for (Py_ssize_t i = 0; i < n; i++) acc[i] = l0[x0[i]]; break;
    case 4: for (Py_ssize_t i = 0; i < n; i++) acc[i] += l0[x0[i]] + l1[x1[i]]; break;
    case 5: for (Py_ssize_t i = 0; i < n; i++) acc[i] = l0[x0[i]] + l1[x1[i]]; break;
    case 6: for (Py_ssize_t i = 0; i < n; i++) acc[i] += (l0[x0[i]] + l1[x1[i]]) + l2[x2[i]]; break;
    case 7: for (Py_ssize_t i = 0; i < n; i++) acc[i] = (l0[x0[i]] + l1[x1[i]]) + l2[x2[i]]; break;
    case 8: for (Py_ssize_t i = 0; i < n; i++) acc[i] += ((l0[x0[i]] + l1[x1[i]]) + l2[x2[i]]) + l3[x3[i]]; break;
    case 9: for (Py_ssize_t i = 0; i < n; i++) acc[i] = ((l0[x0[i]] + l1[x1[i]]) + l2[x2[i]]) + l3[x3[i]]; break;
    }
}

static PyObject *accumulate_many(PyObject *self, PyObject *args)
{
    Py_buffer acc, frames[MAX_FRAMES], luts[MAX_FRAMES];
    PyObject *fseq, *lseq;
    int start, k = 0, nl = 0;
    if (!PyArg_ParseTuple(args, "w*OOp:accumulate_many", &acc, &fseq, &lseq, &start))
        return NULL;
    PyObject *result = NULL, *ff = PySequence_Fast(fseq, "frames must be a sequence"), *lf = NULL;
    if (ff == NULL)
        goto done;
    lf = PySequence_Fast(lseq, "luts must be a sequence");
    if (lf == NULL)
        goto done;
    if (PySequence_Fast_GET_SIZE(ff) < 1 || PySequence_Fast_GET_SIZE(ff) > MAX_FRAMES ||
        PySequence_Fast_GET_SIZE(lf) != PySequence_Fast_GET_SIZE(ff)) {
        PyErr_SetString(PyExc_ValueError, "accumulate_many: 1 to 4 frames, one lut each");
        goto done;
    }
    for (; k < PySequence_Fast_GET_SIZE(ff); k++)
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(ff, k), &frames[k], PyBUF_C_CONTIGUOUS) < 0)
            goto done;
    for (; nl < k; nl++)
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(lf, nl), &luts[nl], PyBUF_C_CONTIGUOUS) < 0)
            goto done;
    const uint8_t *x[MAX_FRAMES];
    const float *l[MAX_FRAMES];
    for (int i = 0; i < k; i++) {
        if (frames[i].len * (Py_ssize_t)sizeof(float) != acc.len || luts[i].len != 256 * (Py_ssize_t)sizeof(float)) {
            PyErr_SetString(PyExc_ValueError, "accumulate_many: one float32 of acc per frame byte, 256 float32 per lut");
            goto done;
        }
        x[i] = (const uint8_t *)frames[i].buf;
        l[i] = (const float *)luts[i].buf;
    }
    if (!PyBuffer_IsContiguous(&acc, 'C')) {
        PyErr_SetString(PyExc_ValueError, "accumulate_many: acc must be C-contiguous");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    add_luts((float *)acc.buf, x, l, k, start, frames[0].len);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < k; i++)
        PyBuffer_Release(&frames[i]);
    for (int i = 0; i < nl; i++)
        PyBuffer_Release(&luts[i]);
    PyBuffer_Release(&acc);
    Py_XDECREF(ff);
    Py_XDECREF(lf);
    return result;
}

static PyObject *accumulate(PyObject *self, PyObject *args)
{
    Py_buffer acc, frame, lut;
    if (!PyArg_ParseTuple(args, "w*y*y*:accumulate", &acc, &frame, &lut))
        return NULL;
    PyObject *result = NULL;
    if (!PyBuffer_IsContiguous(&acc, 'C') || !PyBuffer_IsContiguous(&frame, 'C') ||
        !PyBuffer_IsContiguous(&lut, 'C')) {
        PyErr_SetString(PyExc_ValueError, "accumulate: buffers must be C-contiguous");
    } else if (acc.len != frame.len * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "accumulate: acc must hold one float32 per frame byte");
    } else if (lut.len != 256 * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "accumulate: lut must be 256 float32 values");
    } else {
        Py_BEGIN_ALLOW_THREADS
        add_lut((float *)acc.buf, (const uint8_t *)frame.buf, (const float *)lut.buf, frame.len);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&acc);
    PyBuffer_Release(&frame);
    PyBuffer_Release(&lut);
    return result;
}

static PyMethodDef methods[] = {
    {"accumulate", accumulate, METH_VARARGS,
     "accumulate(acc, frame, lut): acc += lut[frame] in place.\n\n"
     "acc: C-contiguous float32 buffer with one value per byte of frame; frame: C-contiguous\n"
     "uint8 buffer; lut: 256 float32 values. Runs without the GIL."},
    {"accumulate_many", accumulate_many, METH_VARARGS,
     "accumulate_many(acc, frames, luts, start): acc (+)= lut[0][frames[0]] + ... in one pass.\n\n"
     "1 to 4 frames (C-contiguous uint8, one acc float32 per byte), a 256-float32 lut each, summed\n"
     "in order and then added to acc (or stored, when start). Runs without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linear", "Fused table lookup and accumulation.", -1, methods};

PyMODINIT_FUNC PyInit__linear(void) { return PyModule_Create(&module); }
