/* acc += lut[frame], the inner loop of linear-light window averaging.
 *
 * OpenCV's LUT does one scalar table load per byte and then a separate pass adds the float
 * frame into the accumulator; here both are one pass (gcc target_clones picks an AVX2 variant at
 * load time), and on CPUs with AVX-512 VBMI the lookups are vector permutes (add_luts_vbmi).
 * At 1080p the float accumulator is 4x the frame, read and written on each pass, and the scalar
 * lookups cost about as much again (1.6 ms a frame on a Zen 4 EPYC). accumulate_many, which
 * blurforge.averaging uses, adds up to MAX_FRAMES frames in one pass over it; accumulate (one
 * frame) stays for the trees before it that bench/extract.py --baseline runs with this build's kernel.
 * accumulate_yuv does the same from decoded 8-bit YUV 4:2:0 frames: each band of rows is made RGB
 * by swscale (PyAV's own copy, called through the pointer blurforge.video.SwsBands passes) into a
 * small buffer and added while it is in cache, so the RGB frame never goes through memory.
 * blurforge.averaging falls back to OpenCV when this module was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#define SIMD_KERNEL
#include <immintrin.h>
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

/* The same sums 64 values at a time on CPUs with AVX-512 VBMI, where the scalar loop is bound by
 * its table loads (about 1.6 ms a 1080p frame against 0.55 here). A table of 256 floats is kept
 * as 4 planes of bytes (byte p of every entry); vpermt2b looks 64 codes up in 128 bytes at once,
 * so two lookups and a blend on the codes' top bit give one byte plane of 64 values, and
 * interleaving the 4 planes gives the floats themselves, bit for bit. The codes are first put in
 * the order the interleave undoes. Additions are in the scalar loop's order: the same results. */
typedef struct {
    uint8_t b[4][256];
} Planes;

static void split_lut(Planes *p, const float *lut)
{
    for (int c = 0; c < 256; c++) {
        uint32_t u;
        memcpy(&u, &lut[c], 4);
        for (int i = 0; i < 4; i++)
            p->b[i][c] = (uint8_t)(u >> (8 * i));
    }
}

static int vbmi;   /* whether add_luts_fast uses add_luts_vbmi: set at import, simd() switches it */

static int cpu_has_vbmi(void)   /* the CPU (and the OS) run AVX-512 F, BW and VBMI */
{
#ifdef SIMD_KERNEL
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vbmi");
#else
    return 0;
#endif
}

#ifdef SIMD_KERNEL
static const uint8_t ORDER[64] = {   /* ORDER[16l + 4q + d] = 16q + 4l + d */
    0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51,
    4, 5, 6, 7, 20, 21, 22, 23, 36, 37, 38, 39, 52, 53, 54, 55,
    8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59,
    12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63,
};

__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static inline void look64(const Planes *p, __m512i codes, __m512i order, __m512 v[4])
{
    __m512i c = _mm512_permutexvar_epi8(order, codes);
    __mmask64 high = _mm512_movepi8_mask(c);
    __m512i b[4];
    for (int i = 0; i < 4; i++) {
        const uint8_t *t = p->b[i];
        __m512i lo = _mm512_permutex2var_epi8(_mm512_loadu_si512(t), c, _mm512_loadu_si512(t + 64));
        __m512i hi = _mm512_permutex2var_epi8(_mm512_loadu_si512(t + 128), c, _mm512_loadu_si512(t + 192));
        b[i] = _mm512_mask_blend_epi8(high, lo, hi);
    }
    __m512i lo01 = _mm512_unpacklo_epi8(b[0], b[1]), hi01 = _mm512_unpackhi_epi8(b[0], b[1]);
    __m512i lo23 = _mm512_unpacklo_epi8(b[2], b[3]), hi23 = _mm512_unpackhi_epi8(b[2], b[3]);
    v[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(lo01, lo23));
    v[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(lo01, lo23));
    v[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(hi01, hi23));
    v[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(hi01, hi23));
}

__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static Py_ssize_t add_luts_vbmi(float *acc, const uint8_t *const *x, const Planes *p, int k, int start, Py_ssize_t n)
{
    __m512i order = _mm512_loadu_si512(ORDER);
    Py_ssize_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 s[4], v[4];
        look64(&p[0], _mm512_loadu_si512(x[0] + i), order, s);
        for (int f = 1; f < k; f++) {
            look64(&p[f], _mm512_loadu_si512(x[f] + i), order, v);
            for (int q = 0; q < 4; q++)
                s[q] = _mm512_add_ps(s[q], v[q]);
        }
        for (int q = 0; q < 4; q++)
            _mm512_storeu_ps(acc + i + 16 * q, start ? s[q] : _mm512_add_ps(_mm512_loadu_ps(acc + i + 16 * q), s[q]));
    }
    return i;
}
#endif

/* The byte planes of k luts into p when the VBMI kernel is on, for add_luts_fast; else NULL */
static const Planes *planes_for(Planes *p, const float *const *lut, int k)
{
    if (!vbmi)
        return NULL;
    for (int i = 0; i < k; i++)
        split_lut(&p[i], lut[i]);
    return p;
}

/* add_luts, through planes_for's byte planes where it gave them (NULL: the scalar loop) */
static void add_luts_fast(float *acc, const uint8_t *const *x, const float *const *lut, const Planes *planes, int k,
                          int start, Py_ssize_t n)
{
    Py_ssize_t done = 0;
#ifdef SIMD_KERNEL
    if (planes != NULL)
        done = add_luts_vbmi(acc, x, planes, k, start, n);
#endif
    if (done < n) {
        const uint8_t *rest[MAX_FRAMES];
        for (int i = 0; i < k; i++)
            rest[i] = x[i] + done;
        add_luts(acc + done, rest, lut, k, start, n - done);
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
    Planes buf[MAX_FRAMES];
    const Planes *planes = planes_for(buf, l, k);
    Py_BEGIN_ALLOW_THREADS
    add_luts_fast((float *)acc.buf, x, l, planes, k, start, frames[0].len);
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

/* swscale's sws_scale: slices of the source, whole-picture destination pointers */
typedef int (*sws_scale_fn)(void *, const uint8_t *const[], const int[], int, int, uint8_t *const[], const int[]);

typedef struct {
    void *ctx;
    const uint8_t *plane[3];
    int stride[3];
    int chroma_shift;   /* log2 of the vertical chroma subsampling */
} Source;

/* Rows [y0, y0 + rows) of one frame through swscale into out (rows of out_stride bytes): the
 * destination pointer is moved up by y0 rows, as swscale writes a slice at its own rows. */
static int scale_band(sws_scale_fn fn, const Source *s, int y0, int rows, uint8_t *out, int out_stride)
{
    const uint8_t *src[4] = {s->plane[0] + (Py_ssize_t)y0 * s->stride[0],
                             s->plane[1] + (Py_ssize_t)(y0 >> s->chroma_shift) * s->stride[1],
                             s->plane[2] + (Py_ssize_t)(y0 >> s->chroma_shift) * s->stride[2], NULL};
    int src_stride[4] = {s->stride[0], s->stride[1], s->stride[2], 0};
    uint8_t *dst[4] = {out - (Py_ssize_t)y0 * out_stride, NULL, NULL, NULL};
    int dst_stride[4] = {out_stride, 0, 0, 0};
    return fn(s->ctx, src, src_stride, y0, rows, dst, dst_stride);
}

static int parse_sources(PyObject *seq, Source *out, int most)
{
    PyObject *f = PySequence_Fast(seq, "sources must be a sequence");
    if (f == NULL)
        return -1;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(f);
    if (k < 1 || k > most) {
        PyErr_Format(PyExc_ValueError, "1 to %d sources", most);
        Py_DECREF(f);
        return -1;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        unsigned long long ctx, p0, p1, p2;
        Source *s = &out[i];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(f, i), "KKKKiiii;a source is (ctx, plane0..2, stride0..2, "
                              "chroma_shift)", &ctx, &p0, &p1, &p2, &s->stride[0], &s->stride[1], &s->stride[2],
                              &s->chroma_shift)) {
            Py_DECREF(f);
            return -1;
        }
        if (!ctx || !p0 || !p1 || !p2 || s->chroma_shift < 0 || s->chroma_shift > 1) {
            PyErr_SetString(PyExc_ValueError, "a source needs a context, three planes and a chroma shift of 0 or 1");
            Py_DECREF(f);
            return -1;
        }
        s->ctx = (void *)(uintptr_t)ctx;
        s->plane[0] = (const uint8_t *)(uintptr_t)p0, s->plane[1] = (const uint8_t *)(uintptr_t)p1;
        s->plane[2] = (const uint8_t *)(uintptr_t)p2;
    }
    Py_DECREF(f);
    return (int)k;
}

static PyObject *accumulate_yuv(PyObject *self, PyObject *args)
{
    Py_buffer acc, luts[MAX_FRAMES];
    PyObject *sseq, *lseq, *result = NULL, *lf = NULL;
    unsigned long long fnp;
    int start, height, width, band, nl = 0;
    Source src[MAX_FRAMES];
    uint8_t *bands = NULL;
    if (!PyArg_ParseTuple(args, "w*OOpKiii:accumulate_yuv", &acc, &sseq, &lseq, &start, &fnp, &height, &width, &band))
        return NULL;
    int k = parse_sources(sseq, src, MAX_FRAMES);
    if (k < 0)
        goto done;
    lf = PySequence_Fast(lseq, "luts must be a sequence");
    if (lf == NULL)
        goto done;
    if (PySequence_Fast_GET_SIZE(lf) != k) {
        PyErr_SetString(PyExc_ValueError, "accumulate_yuv: one lut per source");
        goto done;
    }
    for (; nl < k; nl++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(lf, nl), &luts[nl], PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        if (luts[nl].len != 256 * (Py_ssize_t)sizeof(float)) {
            nl++;
            PyErr_SetString(PyExc_ValueError, "accumulate_yuv: 256 float32 per lut");
            goto done;
        }
    }
    if (!fnp || height < 2 || width < 2 || band < 2 || band % 2 || !PyBuffer_IsContiguous(&acc, 'C') ||
        acc.len != (Py_ssize_t)height * width * 3 * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "accumulate_yuv: a C-contiguous float32 acc of height x width x 3, an even "
                                          "band and a sws_scale pointer");
        goto done;
    }
    Py_ssize_t row = (Py_ssize_t)width * 3;
    bands = PyMem_Malloc((size_t)k * band * row);
    if (bands == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *x[MAX_FRAMES];
    const float *l[MAX_FRAMES];
    for (int i = 0; i < k; i++)
        x[i] = bands + (Py_ssize_t)i * band * row, l[i] = (const float *)luts[i].buf;
    Planes buf[MAX_FRAMES];
    const Planes *planes = planes_for(buf, l, k);
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int y0 = 0; y0 < height && !failed; y0 += band) {
        int rows = height - y0 < band ? height - y0 : band;
        for (int i = 0; i < k; i++)
            if (scale_band((sws_scale_fn)(uintptr_t)fnp, &src[i], y0, rows, (uint8_t *)x[i], (int)row) != rows)
                failed = 1;
        if (!failed)
            add_luts_fast((float *)acc.buf + y0 * row, x, l, planes, k, start, rows * row);
    }
    Py_END_ALLOW_THREADS
    if (failed)
        PyErr_SetString(PyExc_RuntimeError, "accumulate_yuv: swscale did not convert a band");
    else
        result = Py_NewRef(Py_None);
done:
    PyMem_Free(bands);
    for (int i = 0; i < nl; i++)
        PyBuffer_Release(&luts[i]);
    Py_XDECREF(lf);
    PyBuffer_Release(&acc);
    return result;
}

static PyObject *convert_yuv(PyObject *self, PyObject *args)
{
    Py_buffer out;
    PyObject *one;
    unsigned long long fnp;
    int height, width, band;
    Source src;
    if (!PyArg_ParseTuple(args, "w*OKiii:convert_yuv", &out, &one, &fnp, &height, &width, &band))
        return NULL;
    PyObject *result = NULL, *seq = PyTuple_Pack(1, one);
    if (seq == NULL || parse_sources(seq, &src, 1) < 0)
        goto done;
    if (!fnp || height < 2 || width < 2 || band < 2 || band % 2 || !PyBuffer_IsContiguous(&out, 'C') ||
        out.len != (Py_ssize_t)height * width * 3) {
        PyErr_SetString(PyExc_ValueError, "convert_yuv: a C-contiguous uint8 out of height x width x 3, an even band "
                                          "and a sws_scale pointer");
        goto done;
    }
    int failed = 0, row = width * 3;
    Py_BEGIN_ALLOW_THREADS
    for (int y0 = 0; y0 < height && !failed; y0 += band) {
        int rows = height - y0 < band ? height - y0 : band;
        failed = scale_band((sws_scale_fn)(uintptr_t)fnp, &src, y0, rows, (uint8_t *)out.buf + (Py_ssize_t)y0 * row,
                            row) != rows;
    }
    Py_END_ALLOW_THREADS
    if (failed)
        PyErr_SetString(PyExc_RuntimeError, "convert_yuv: swscale did not convert a band");
    else
        result = Py_NewRef(Py_None);
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&out);
    return result;
}

/* out[i] = table[(int)((clip(x[i], lo, 1) - lo) * scale + 0.5)] in float32 arithmetic, as numpy
 * does it step by step in blurforge.curves.CameraCurve.encode; NaN reads as lo. */
CLONES
static void encode_loop(const float *restrict x, uint8_t *restrict out, const uint8_t *restrict table, float lo,
                        float scale, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = x[i];
        v = v > lo ? v : lo;
        v = v < 1.0f ? v : 1.0f;
        out[i] = table[(int32_t)((v - lo) * scale + 0.5f)];
    }
}

static PyObject *encode_table(PyObject *self, PyObject *args)
{
    Py_buffer x, table, out;
    float lo, scale;
    if (!PyArg_ParseTuple(args, "y*y*w*ff:encode_table", &x, &table, &out, &lo, &scale))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = x.len / (Py_ssize_t)sizeof(float);
    if (!PyBuffer_IsContiguous(&x, 'C') || !PyBuffer_IsContiguous(&table, 'C') || !PyBuffer_IsContiguous(&out, 'C')
        || x.len % (Py_ssize_t)sizeof(float) || out.len != n || !(lo < 1.0f) || !(scale > 0.0f)
        || (double)(1.0f - lo) * scale + 0.5 >= (double)table.len) {
        PyErr_SetString(PyExc_ValueError, "encode_table: C-contiguous float32 x, one uint8 of out per value, lo < 1 "
                                          "and a table covering (1 - lo) * scale");
    } else {
        Py_BEGIN_ALLOW_THREADS
        encode_loop((const float *)x.buf, (uint8_t *)out.buf, (const uint8_t *)table.buf, lo, scale, n);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&table);
    PyBuffer_Release(&out);
    return result;
}

/* Exact rounding through the curve's code thresholds: thr[k] is the least float32 that encodes to
 * code k or more (thr[256] = inf). The top 17 bits of a positive float (exponent, 8 bits of
 * mantissa) index the code of their bin's lowest value; a bin is narrower than a code wherever
 * the curve rises slower than 256 codes per doubling (gamma 2.2: 0.45 codes at most), so one
 * comparison with the next threshold finishes it. NaN and values <= 0 give 0; >= 1 give 255. */
CLONES
static void threshold_loop(const float *restrict x, uint8_t *restrict out, const uint8_t *restrict bins,
                           const float *restrict thr, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = x[i];
        uint32_t u;
        memcpy(&u, &v, 4);
        int c = v > 0.0f ? (v < 1.0f ? bins[u >> 15] : 255) : 0;
        out[i] = (uint8_t)(c + (v > 0.0f && v < 1.0f && v >= thr[c + 1]));
    }
}

static PyObject *encode_thresholds(PyObject *self, PyObject *args)
{
    Py_buffer x, bins, thr, out;
    if (!PyArg_ParseTuple(args, "y*y*y*w*:encode_thresholds", &x, &bins, &thr, &out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = x.len / (Py_ssize_t)sizeof(float);
    if (!PyBuffer_IsContiguous(&x, 'C') || !PyBuffer_IsContiguous(&bins, 'C') || !PyBuffer_IsContiguous(&thr, 'C')
        || !PyBuffer_IsContiguous(&out, 'C') || x.len % (Py_ssize_t)sizeof(float) || out.len != n
        || bins.len != (127 << 8) || thr.len != 257 * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "encode_thresholds: C-contiguous float32 x, one uint8 of out per value, "
                                          "32512 bins and 257 float32 thresholds");
    } else {
        Py_BEGIN_ALLOW_THREADS
        threshold_loop((const float *)x.buf, (uint8_t *)out.buf, (const uint8_t *)bins.buf, (const float *)thr.buf, n);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&bins);
    PyBuffer_Release(&thr);
    PyBuffer_Release(&out);
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

static PyObject *simd(PyObject *self, PyObject *args)
{
    int on = -1;
    if (!PyArg_ParseTuple(args, "|p:simd", &on))
        return NULL;
    const char *now = vbmi ? "avx512vbmi" : "scalar";
    if (on >= 0)
        vbmi = on && cpu_has_vbmi();
    return PyUnicode_FromString(now);
}

static PyMethodDef methods[] = {
    {"simd", simd, METH_VARARGS,
     "simd([on]): the table lookups' kernel in use, 'avx512vbmi' or 'scalar' (the same sums); with\n"
     "an argument, turns the SIMD kernel off (False) or back on where the CPU has it (True)."},
    {"accumulate", accumulate, METH_VARARGS,
     "accumulate(acc, frame, lut): acc += lut[frame] in place.\n\n"
     "acc: C-contiguous float32 buffer with one value per byte of frame; frame: C-contiguous\n"
     "uint8 buffer; lut: 256 float32 values. Runs without the GIL."},
    {"accumulate_many", accumulate_many, METH_VARARGS,
     "accumulate_many(acc, frames, luts, start): acc (+)= lut[0][frames[0]] + ... in one pass.\n\n"
     "1 to 4 frames (C-contiguous uint8, one acc float32 per byte), a 256-float32 lut each, summed\n"
     "in order and then added to acc (or stored, when start). Runs without the GIL."},
    {"accumulate_yuv", accumulate_yuv, METH_VARARGS,
     "accumulate_yuv(acc, sources, luts, start, sws_scale, height, width, band): accumulate_many from\n"
     "decoded frames: each band of rows of each source is made RGB by sws_scale (a function pointer)\n"
     "and added at once. A source is (context, plane0, plane1, plane2, stride0, stride1, stride2,\n"
     "chroma_shift) (addresses as ints); acc: float32 height x width x 3. Runs without the GIL."},
    {"encode_table", encode_table, METH_VARARGS,
     "encode_table(x, table, out, lo, scale): out = table[int((clip(x, lo, 1) - lo) * scale + 0.5)],\n"
     "linear light (float32) to codes through a fine table of the forward curve. Runs without the GIL."},
    {"encode_thresholds", encode_thresholds, METH_VARARGS,
     "encode_thresholds(x, bins, thr, out): out = the number of thresholds thr[1..255] <= x, exactly\n"
     "(x float32 linear light; bins: 32512 uint8, the code of each bin of the top 17 bits of a float in\n"
     "(0, 1); thr: 257 float32, thr[256] = inf). Runs without the GIL."},
    {"convert_yuv", convert_yuv, METH_VARARGS,
     "convert_yuv(out, source, sws_scale, height, width, band): one source to RGB in out (uint8\n"
     "height x width x 3), band rows at a time, as accumulate_yuv converts it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linear", "Fused table lookup and accumulation.", -1, methods};

PyMODINIT_FUNC PyInit__linear(void)
{
    vbmi = cpu_has_vbmi();
    return PyModule_Create(&module);
}
