/* acc += lut[frame], the inner loop of linear-light window averaging.
 *
 * OpenCV's LUT does one scalar table load per byte and then a separate pass adds the float
 * frame into the accumulator; here both are one pass, and on AVX2 machines the compiler turns
 * the table loads into vector gathers (gcc target_clones picks the variant at load time).
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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linear", "Fused table lookup and accumulation.", -1, methods};

PyMODINIT_FUNC PyInit__linear(void) { return PyModule_Create(&module); }
