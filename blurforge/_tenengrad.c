/* The sums behind blurforge.sharpness.tenengrad, in one pass over a grey frame.
 *
 * OpenCV's spatialGradient writes two int16 images of Sobel x and y, which two norms then read
 * back; here the squared gradients are summed as they are made, three rows at a time, with the
 * same 3x3 Sobel and the same border (reflect-101: index -1 reads 1, index n reads n-2), so the
 * sums are the same integers. Extract calls it on every decoded frame.
 * blurforge.sharpness falls back to OpenCV when this module was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

static Py_ssize_t reflect101(Py_ssize_t i, Py_ssize_t n)
{
    if (n == 1)
        return 0;
    if (i < 0)
        return -i;
    if (i >= n)
        return 2 * n - 2 - i;
    return i;
}

/* One row's gradient energy: s = vertical [1 2 1] sums and d = vertical [-1 0 1] differences of
 * the row's three source rows, with one reflected column on each side (s[0] is column -1). Every
 * intermediate fits 16 bits (|s|, |gx|, |gy| <= 1020), so eight more pixels go in a vector. */
CLONES
static int64_t row_energy(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, int16_t *s, int16_t *d,
                          Py_ssize_t w)
{
    for (Py_ssize_t x = 0; x < w; x++) {
        s[x + 1] = (int16_t)(r0[x] + 2 * r1[x] + r2[x]);
        d[x + 1] = (int16_t)(r2[x] - r0[x]);
    }
    Py_ssize_t l = reflect101(-1, w), r = reflect101(w, w);
    s[0] = s[l + 1], d[0] = d[l + 1];
    s[w + 1] = s[r + 1], d[w + 1] = d[r + 1];
    int64_t e = 0;
    for (Py_ssize_t x0 = 0; x0 < w; x0 += 1024) {  /* 1024 x (2 x 1020^2) fits 32 bits unsigned */
        Py_ssize_t x1 = x0 + 1024 < w ? x0 + 1024 : w;
        uint32_t part = 0;
        for (Py_ssize_t x = x0; x < x1; x++) {
            int16_t gx = (int16_t)(s[x + 2] - s[x]), gy = (int16_t)(d[x] + 2 * d[x + 1] + d[x + 2]);
            part += (uint32_t)((int32_t)gx * gx + (int32_t)gy * gy);
        }
        e += part;
    }
    return e;
}

CLONES
static int64_t plane_sum(const uint8_t *p, Py_ssize_t n)
{
    int64_t t = 0;
    for (Py_ssize_t i0 = 0; i0 < n; i0 += 1 << 20) {  /* 2^20 x 255 fits 32 bits */
        Py_ssize_t i1 = i0 + (1 << 20) < n ? i0 + (1 << 20) : n;
        uint32_t part = 0;
        for (Py_ssize_t i = i0; i < i1; i++)
            part += p[i];
        t += part;
    }
    return t;
}

static PyObject *sums(PyObject *self, PyObject *args)
{
    Py_buffer g;
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "O:sums", &obj) || PyObject_GetBuffer(obj, &g, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    PyObject *result = NULL;
    int16_t *tmp = NULL;
    if (g.ndim != 2 || g.itemsize != 1 || !PyBuffer_IsContiguous(&g, 'C')) {
        PyErr_SetString(PyExc_ValueError, "sums: a C-contiguous 2-D uint8 image");
        goto done;
    }
    Py_ssize_t h = g.shape[0], w = g.shape[1];
    if (h < 1 || w < 1) {
        PyErr_SetString(PyExc_ValueError, "sums: an empty image");
        goto done;
    }
    tmp = PyMem_Malloc(2 * (size_t)(w + 2) * sizeof(int16_t));
    if (tmp == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *p = (const uint8_t *)g.buf;
    int64_t energy = 0, total;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t y = 0; y < h; y++)
        energy += row_energy(p + reflect101(y - 1, h) * w, p + y * w, p + reflect101(y + 1, h) * w, tmp,
                             tmp + w + 2, w);
    total = plane_sum(p, h * w);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("LL", (long long)energy, (long long)total);
done:
    PyMem_Free(tmp);
    PyBuffer_Release(&g);
    return result;
}

static PyMethodDef methods[] = {
    {"sums", sums, METH_VARARGS,
     "sums(grey) -> (energy, total)\n\n"
     "energy: the sum over the image of gx*gx + gy*gy, the 3x3 Sobel gradients with reflect-101\n"
     "borders (cv2.spatialGradient's); total: the sum of the pixels. grey: C-contiguous 2-D uint8.\n"
     "Runs without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tenengrad", "Sobel gradient energy of a grey image.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__tenengrad(void) { return PyModule_Create(&module); }
