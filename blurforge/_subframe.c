/* The per-pixel work of blurforge.interpolate's sub-frames in single passes over the crop.
 *
 * With OpenCV every step of a sub-frame (the fixed-point source maps, the remaps of the flow and
 * colour packs, their splits, the weights and accumulations) is a separate call writing a
 * crop-sized plane; here one pass per pixel does all the warped sub-frames of an interval with the
 * sums in registers, and one pass per smear stage. Samples are bilinear with exact float weights
 * and clamped coordinates (OpenCV's INTER_LINEAR with BORDER_REPLICATE, which quantises positions
 * to 1/32 px). blurforge.interpolate falls back to OpenCV when this module was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

typedef struct {
    const float *p;     /* h x w x 4, C order */
    int w, h;
} Img4;

#if defined(__GNUC__)
typedef float v4f __attribute__((vector_size(16)));     /* one pixel's 4 channels in one register */
static inline v4f load4(const float *p)
{
    v4f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
#endif

/* img sampled at (x, y), clamped to the picture (what border-replicate gives). */
static inline void sample4(const Img4 *im, float x, float y, float out[4])
{
    x = x >= 0.0f ? x : 0.0f;           /* also NaN -> 0 */
    y = y >= 0.0f ? y : 0.0f;
    x = x <= (float)(im->w - 1) ? x : (float)(im->w - 1);
    y = y <= (float)(im->h - 1) ? y : (float)(im->h - 1);
    int x0 = (int)x, y0 = (int)y;
    float fx = x - (float)x0, fy = y - (float)y0;
    Py_ssize_t dx = x0 < im->w - 1 ? 4 : 0, dy = y0 < im->h - 1 ? (Py_ssize_t)im->w * 4 : 0;
    const float *q = im->p + ((Py_ssize_t)y0 * im->w + x0) * 4;
#if defined(__GNUC__)
    v4f a = load4(q), b = load4(q + dx), c = load4(q + dy), d = load4(q + dy + dx);
    v4f top = a + fx * (b - a), bot = c + fx * (d - c);
    v4f r = top + fy * (bot - top);
    __builtin_memcpy(out, &r, sizeof r);
#else
    for (int k = 0; k < 4; k++) {
        float top = q[k] + fx * (q[k + dx] - q[k]);
        float bot = q[k + dy] + fx * (q[k + dy + dx] - q[k + dy]);
        out[k] = top + fy * (bot - top);
    }
#endif
}

#define LANES 8      /* pixels of a row done together: their position arithmetic vectorises */

/* img sampled at LANES positions (mx, my), clamped to the picture; out: channel-major. The positions'
 * arithmetic runs on all lanes at once, then each lane's 4 channels are interpolated together. */
static inline void sample_lanes(const Img4 *im, const float *mx, const float *my, float out[4][LANES])
{
    const float wm = (float)(im->w - 1), hm = (float)(im->h - 1);
    int idx[LANES], dx[LANES], dy[LANES];
    float fx[LANES], fy[LANES];
    for (int l = 0; l < LANES; l++) {
        float x = mx[l] >= 0.0f ? mx[l] : 0.0f, y = my[l] >= 0.0f ? my[l] : 0.0f;     /* also NaN -> 0 */
        x = x <= wm ? x : wm;
        y = y <= hm ? y : hm;
        const int x0 = (int)x, y0 = (int)y;
        fx[l] = x - (float)x0, fy[l] = y - (float)y0;
        dx[l] = x0 < im->w - 1 ? 4 : 0;
        dy[l] = y0 < im->h - 1 ? 4 * im->w : 0;
        idx[l] = 4 * (y0 * im->w + x0);
    }
    for (int l = 0; l < LANES; l++) {
        const float *q = im->p + idx[l];
#if defined(__GNUC__)
        v4f a = load4(q), b = load4(q + dx[l]), c = load4(q + dy[l]), d = load4(q + dy[l] + dx[l]);
        v4f top = a + fx[l] * (b - a), bot = c + fx[l] * (d - c), r = top + fy[l] * (bot - top);
        out[0][l] = r[0], out[1][l] = r[1], out[2][l] = r[2], out[3][l] = r[3];
#else
        for (int k = 0; k < 4; k++) {
            float top = q[k] + fx[l] * (q[k + dx[l]] - q[k]);
            float bot = q[k + dy[l]] + fx[l] * (q[k + dy[l] + dx[l]] - q[k + dy[l]]);
            out[k][l] = top + fy[l] * (bot - top);
        }
#endif
    }
}

/* One side of a sub-frame at time t for the lanes at (xs, y): the point's own flow by fixed-point
 * iteration of p + t flow(p) = x from the flow at x (own, channel-major), then the colour+trust pack
 * at p. */
static inline void side_lanes(const Img4 *flow, const Img4 *pack, const float own[4][LANES], const float *xs, float y,
                              float t, int iters, float v[4][LANES], float col[4][LANES])
{
    float mx[LANES], my[LANES];
    for (int l = 0; l < LANES; l++) {
        for (int k = 0; k < 4; k++)
            v[k][l] = own[k][l];
        mx[l] = xs[l] - t * own[0][l], my[l] = y - t * own[1][l];
    }
    for (int i = 0; i < iters; i++) {
        sample_lanes(flow, mx, my, v);
        for (int l = 0; l < LANES; l++)
            mx[l] = xs[l] - t * v[0][l], my[l] = y - t * v[1][l];
    }
    sample_lanes(pack, mx, my, col);
}

CLONES
static void substeps_rows(const Img4 *fa, const Img4 *pa, const Img4 *fb, const Img4 *pb, const float *chg,
                          float *out, float *vel, int n, int iters, int smear, int y0, int y1)
{
    const int w = fa->w;
    const float inv_n = 1.0f / (float)n, half_n = 0.5f * (float)n;
    for (int y = y0; y < y1; y++) {
        for (int x0 = 0; x0 < w; x0 += LANES) {
            const int m = w - x0 < LANES ? w - x0 : LANES;     /* lanes past the row's end repeat its last pixel */
            float xs[LANES], c[LANES], own_a[4][LANES], own_b[4][LANES], ca[4][LANES], cb[4][LANES];
            int any = 0;
            for (int l = 0; l < LANES; l++) {
                const int x = x0 + (l < m ? l : m - 1);
                const Py_ssize_t i = (Py_ssize_t)y * w + x;
                xs[l] = (float)x;
                c[l] = chg[i];
                any |= c[l] != 0.0f;
                for (int k = 0; k < 4; k++) {
                    own_a[k][l] = fa->p[4 * i + k], own_b[k][l] = fb->p[4 * i + k];
                    ca[k][l] = pa->p[4 * i + k], cb[k][l] = pb->p[4 * i + k];
                }
            }
            float acc[3][LANES] = {{0}}, ua[LANES] = {0}, ub[LANES] = {0}, vx[LANES] = {0}, vy[LANES] = {0};
            for (int j = 1; any && j < n; j++) {
                const float t = (float)j * inv_n, s = 1.0f - t;
                float va[4][LANES], vb[4][LANES], sa[4][LANES], sb[4][LANES];
                side_lanes(fa, pa, own_a, xs, (float)y, t, iters, va, sa);
                side_lanes(fb, pb, own_b, xs, (float)y, s, iters, vb, sb);
                for (int l = 0; l < LANES; l++) {
                    const float den = sa[3][l] * s + sb[3][l] * t;
                    /* sub-pixel motion is already integrated well by the frames themselves */
                    const float fast = va[2][l] > vb[2][l] ? va[2][l] : vb[2][l];
                    const float fc = fast * c[l], use = den > 1e-3f ? fc : 0.0f;
                    const float r = use / (den > 1e-3f ? den : 1e-3f);
                    const float wa = sa[3][l] * r * s, wb = sb[3][l] * r * t;
                    for (int k = 0; k < 3; k++)
                        acc[k][l] += sa[k][l] * wa + sb[k][l] * wb;
                    ua[l] += use * s;
                    ub[l] += use * t;
                    vx[l] += va[0][l] * wa - vb[0][l] * wb;
                    vy[l] += va[1][l] * wa - vb[1][l] * wb;
                }
            }
            for (int l = 0; l < m; l++) {
                const Py_ssize_t i = (Py_ssize_t)y * w + x0 + l;
                float *o = out + 4 * i;
                if (smear) {    /* the smear's input: the sum of the deltas plus the ends, and the velocity */
                    for (int k = 0; k < 3; k++)
                        o[k] = acc[k][l] - ca[k][l] * ua[l] - cb[k][l] * ub[l] + (ca[k][l] + cb[k][l]) * half_n;
                    o[3] = c[l];
                    const float ea = 0.5f * own_a[2][l] * ca[3][l] * c[l], eb = -0.5f * own_b[2][l] * cb[3][l] * c[l];
                    vel[2 * i] = (vx[l] + own_a[0][l] * ea + own_b[0][l] * eb) * inv_n;
                    vel[2 * i + 1] = (vy[l] + own_a[1][l] * ea + own_b[1][l] * eb) * inv_n;
                } else {
                    for (int k = 0; k < 3; k++)
                        o[k] = (acc[k][l] - ca[k][l] * ua[l] - cb[k][l] * ub[l]) * inv_n;
                    o[3] = 0.0f;
                }
            }
        }
    }
}

CLONES
static void smear_rows(const Img4 *src, const float *vel, float d, float *dst, const float *chg, const float *pa,
                       const float *pb, int n, int last, int y0, int y1)
{
    const int w = src->w;
    const float inv_n = 1.0f / (float)n;
    for (int y = y0; y < y1; y++) {
        for (int x0 = 0; x0 < w; x0 += LANES) {
            const int m = w - x0 < LANES ? w - x0 : LANES;     /* lanes past the row's end repeat its last pixel */
            float lx[LANES], ly[LANES], hx[LANES], hy[LANES], c[LANES], lo[4][LANES], hi[4][LANES];
            int any = 0;
            for (int l = 0; l < LANES; l++) {
                const int x = x0 + (l < m ? l : m - 1);
                const Py_ssize_t i = (Py_ssize_t)y * w + x;
                const float ex = d * vel[2 * i], ey = d * vel[2 * i + 1];
                lx[l] = (float)x - ex, ly[l] = (float)y - ey, hx[l] = (float)x + ex, hy[l] = (float)y + ey;
                c[l] = chg[i];
                any |= c[l] != 0.0f;
            }
            float *o = dst + 4 * ((Py_ssize_t)y * w + x0);
            if (last && !any) {     /* the delta is 0 where the picture does not change */
                for (int k = 0; k < 4 * m; k++)
                    o[k] = 0.0f;
                continue;
            }
            sample_lanes(src, lx, ly, lo);
            sample_lanes(src, hx, hy, hi);
            for (int l = 0; l < m; l++, o += 4) {
                if (last) {         /* the delta: the smeared sum less the ends, where the picture changes */
                    const Py_ssize_t i = (Py_ssize_t)y * w + x0 + l;
                    const float *ca = pa + 4 * i, *cb = pb + 4 * i;
                    for (int k = 0; k < 3; k++)
                        o[k] = (0.5f * (lo[k][l] + hi[k][l]) * inv_n - 0.5f * (ca[k] + cb[k])) * c[l];
                    o[3] = 0.0f;
                } else {
                    for (int k = 0; k < 4; k++)
                        o[k] = 0.5f * (lo[k][l] + hi[k][l]);
                }
            }
        }
    }
}

CLONES
static void pack_flow_rows(const float *flow, float *flow4, float *speed, Py_ssize_t count, float slow)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const float fx = flow[2 * i], fy = flow[2 * i + 1], v = sqrtf(fx * fx + fy * fy);
        float fast = v - slow;
        fast = fast > 0.0f ? fast : 0.0f;
        flow4[4 * i] = fx, flow4[4 * i + 1] = fy, flow4[4 * i + 2] = fast < 1.0f ? fast : 1.0f, flow4[4 * i + 3] = 0.0f;
        speed[i] = v;
    }
}

CLONES
static void trust_rows(const Img4 *self, const Img4 *other, const float *img, float *pack, float *ok, float fb_px,
                       int y0, int y1)
{
    const int w = self->w, h = self->h;
    for (int y = y0; y < y1; y++) {
        for (int x = 0; x < w; x++) {
            const Py_ssize_t i = (Py_ssize_t)y * w + x;
            const float fx = self->p[4 * i], fy = self->p[4 * i + 1], tx = (float)x + fx, ty = (float)y + fy;
            float back[4];
            sample4(other, tx, ty, back);
            const float ex = fx + back[0], ey = fy + back[1];
            const int inside = (tx >= 0.0f) & (tx <= (float)(w - 1)) & (ty >= 0.0f) & (ty <= (float)(h - 1));
            const float good = (float)((sqrtf(ex * ex + ey * ey) < fb_px) & inside);     /* no branches to miss */
            pack[4 * i] = img[3 * i], pack[4 * i + 1] = img[3 * i + 1], pack[4 * i + 2] = img[3 * i + 2];
            pack[4 * i + 3] = good;
            ok[i] = good;
        }
    }
}

/* Checks that a buffer is C-contiguous float32 data of n values. */
static int check(Py_buffer *b, Py_ssize_t n, const char *what)
{
    if (!PyBuffer_IsContiguous(b, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous", what);
        return 0;
    }
    if (b->len != n * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zd float32 values", what, n);
        return 0;
    }
    return 1;
}

static PyObject *substeps(PyObject *self, PyObject *args)
{
    Py_buffer b[7];
    int h, w, n, iters, smear, y0 = 0, y1 = -1;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*w*iiiip|ii:substeps", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6],
                          &h, &w, &n, &iters, &smear, &y0, &y1))
        return NULL;
    static const char *names[7] = {"flow_a", "pack_a", "flow_b", "pack_b", "chg", "out", "vel"};
    static const int per[7] = {4, 4, 4, 4, 1, 4, 2};
    PyObject *result = NULL;
    y1 = y1 < 0 ? h : y1;
    int ok = h > 0 && w > 0 && n >= 1 && iters >= 0 && (Py_ssize_t)h * w < INT_MAX / 8 && 0 <= y0 && y0 <= y1 && y1 <= h;
    if (!ok)
        PyErr_SetString(PyExc_ValueError,
                        "substeps: h, w, n must be positive (h w < 2^28), iters not negative, 0 <= y0 <= y1 <= h");
    for (int k = 0; ok && k < 7; k++)
        ok = check(&b[k], (Py_ssize_t)h * w * per[k], names[k]);
    if (ok) {
        Img4 fa = {b[0].buf, w, h}, pa = {b[1].buf, w, h}, fb = {b[2].buf, w, h}, pb = {b[3].buf, w, h};
        Py_BEGIN_ALLOW_THREADS
        substeps_rows(&fa, &pa, &fb, &pb, b[4].buf, b[5].buf, b[6].buf, n, iters, smear, y0, y1);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    for (int k = 0; k < 7; k++)
        PyBuffer_Release(&b[k]);
    return result;
}

static PyObject *smear(PyObject *self, PyObject *args)
{
    Py_buffer b[6];
    int h, w, n, last, y0 = 0, y1 = -1;
    float d;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*iifip|ii:smear", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &h, &w, &d, &n,
                          &last, &y0, &y1))
        return NULL;
    static const char *names[6] = {"src", "vel", "chg", "pack_a", "pack_b", "dst"};
    static const int per[6] = {4, 2, 1, 4, 4, 4};
    PyObject *result = NULL;
    y1 = y1 < 0 ? h : y1;
    int ok = h > 0 && w > 0 && n >= 1 && (Py_ssize_t)h * w < INT_MAX / 8 && 0 <= y0 && y0 <= y1 && y1 <= h;
    if (!ok)
        PyErr_SetString(PyExc_ValueError, "smear: h, w, n must be positive (h w < 2^28), 0 <= y0 <= y1 <= h");
    for (int k = 0; ok && k < 6; k++)
        ok = check(&b[k], (Py_ssize_t)h * w * per[k], names[k]);
    if (ok && (b[0].buf == b[5].buf)) {
        PyErr_SetString(PyExc_ValueError, "smear: dst must not be src");
        ok = 0;
    }
    if (ok) {
        Img4 src = {b[0].buf, w, h};
        Py_BEGIN_ALLOW_THREADS
        smear_rows(&src, b[1].buf, d, b[5].buf, b[2].buf, b[3].buf, b[4].buf, n, last, y0, y1);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    for (int k = 0; k < 6; k++)
        PyBuffer_Release(&b[k]);
    return result;
}

static PyObject *pack_flow(PyObject *self, PyObject *args)
{
    Py_buffer b[3];
    int h, w;
    float slow;
    if (!PyArg_ParseTuple(args, "y*w*w*iif:pack_flow", &b[0], &b[1], &b[2], &h, &w, &slow))
        return NULL;
    static const char *names[3] = {"flow", "flow4", "speed"};
    static const int per[3] = {2, 4, 1};
    PyObject *result = NULL;
    int ok = h > 0 && w > 0;
    if (!ok)
        PyErr_SetString(PyExc_ValueError, "pack_flow: h, w must be positive");
    for (int k = 0; ok && k < 3; k++)
        ok = check(&b[k], (Py_ssize_t)h * w * per[k], names[k]);
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        pack_flow_rows(b[0].buf, b[1].buf, b[2].buf, (Py_ssize_t)h * w, slow);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    for (int k = 0; k < 3; k++)
        PyBuffer_Release(&b[k]);
    return result;
}

static PyObject *trust(PyObject *self, PyObject *args)
{
    Py_buffer b[5];
    int h, w, y0 = 0, y1 = -1;
    float fb_px;
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*iif|ii:trust", &b[0], &b[1], &b[2], &b[3], &b[4], &h, &w, &fb_px, &y0, &y1))
        return NULL;
    static const char *names[5] = {"flow4", "other", "img", "pack", "ok"};
    static const int per[5] = {4, 4, 3, 4, 1};
    PyObject *result = NULL;
    y1 = y1 < 0 ? h : y1;
    int ok = h > 0 && w > 0 && (Py_ssize_t)h * w < INT_MAX / 8 && 0 <= y0 && y0 <= y1 && y1 <= h;
    if (!ok)
        PyErr_SetString(PyExc_ValueError, "trust: h, w must be positive (h w < 2^28), 0 <= y0 <= y1 <= h");
    for (int k = 0; ok && k < 5; k++)
        ok = check(&b[k], (Py_ssize_t)h * w * per[k], names[k]);
    if (ok) {
        Img4 f = {b[0].buf, w, h}, o = {b[1].buf, w, h};
        Py_BEGIN_ALLOW_THREADS
        trust_rows(&f, &o, b[2].buf, b[3].buf, b[4].buf, fb_px, y0, y1);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    for (int k = 0; k < 5; k++)
        PyBuffer_Release(&b[k]);
    return result;
}

static PyMethodDef methods[] = {
    {"substeps", substeps, METH_VARARGS,
     "substeps(flow_a, pack_a, flow_b, pack_b, chg, out, vel, h, w, n, iters, smear[, y0, y1])\n\n"
     "The warped sub-frames j/n (j = 1 .. n-1) of one interval in one pass: side a (flow_a: x, y, fast, -;\n"
     "pack_a: r, g, b, trust) at time t and side b at 1 - t, each at the fixed point of its flow (iters\n"
     "iterations). smear false: out = the correction (r, g, b, 0) divided by n; true: out = the smear's\n"
     "input (sum of deltas plus n/2 (a + b), chg) and vel = the velocity of what it shows (x, y), divided\n"
     "by n. All float32, C-contiguous, h x w x (4, 4, 4, 4, 1, 4, 2). Only rows y0 .. y1 - 1 (default all)\n"
     "are written, so bands can run on threads: it runs without the GIL."},
    {"smear", smear, METH_VARARGS,
     "smear(src, vel, chg, pack_a, pack_b, dst, h, w, d, n, last[, y0, y1])\n\n"
     "One smear stage: dst = the mean of src sampled at x - d vel and x + d vel. last: dst = (that / n\n"
     "less (a + b) / 2) * chg in r, g, b (0 in the 4th channel). dst must not be src. Rows y0 .. y1 - 1\n"
     "(default all). Runs without the GIL."},
    {"pack_flow", pack_flow, METH_VARARGS,
     "pack_flow(flow, flow4, speed, h, w, slow)\n\n"
     "flow (x, y) -> flow4 = (x, y, fast, 0) with fast = clip(|flow| - slow, 0, 1), and speed = |flow|.\n"
     "All float32, C-contiguous, h x w x (2, 4, 1). Runs without the GIL."},
    {"trust", trust, METH_VARARGS,
     "trust(flow4, other, img, pack, ok, h, w, fb_px[, y0, y1])\n\n"
     "ok = 1 where following flow4 (x, y in its first channels) and then other's flow (sampled there)\n"
     "comes back within fb_px and lands inside the picture, else 0; pack = (img r, g, b, ok). All float32,\n"
     "C-contiguous, h x w x (4, 4, 3, 4, 1). Rows y0 .. y1 - 1 (default all). Runs without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_subframe", "Fused sub-frame sampling and smearing.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__subframe(void) { return PyModule_Create(&module); }
