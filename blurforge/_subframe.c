/* The per-pixel work of blurforge.interpolate after the flow, in single passes over the crop.
 *
 * With OpenCV every step of a sub-frame (the fixed-point source maps, the remaps of the flow and
 * colour packs, their splits, the weights and accumulations) is a separate call writing a
 * crop-sized plane; here one pass does all the warped sub-frames of an interval with the sums in
 * registers, one pass each smear stage, packing the flow, and the forward/backward trust. Pixels
 * go 8 of a row at a time in GNU C vectors (gcc target_clones adds an AVX2 variant), so the
 * sampling positions' arithmetic is one vector op for all 8. Samples are bilinear at float
 * positions with clamped coordinates, as OpenCV's INTER_LINEAR remap with BORDER_REPLICATE
 * (older OpenCV rounds positions to 1/32 px). Rows y0 .. y1 - 1 only, so that bands can run on
 * threads; the GIL is released. blurforge.interpolate falls back to OpenCV without this module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#define RUNTIME_AVX2 1
#else
#define CLONES
#endif

/* Whether 8-wide vectors are native (AVX2 at run time with the clones, AVX at build time without):
 * only then are two pixels interpolated in one vector and transposed; lowered to 4-wide ones,
 * those shuffles cost 5x, so there each pixel goes on its own. */
static int wide;

#define INLINE static inline __attribute__((always_inline))   /* 32-byte vectors stay in registers */
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"    /* ... so their ABI without AVX does not matter */
#endif

typedef struct {
    const float *p;     /* h x w x 4, C order */
    int w, h;
} Img4;

#if !defined(__GNUC__)
#error "blurforge._subframe needs GCC or clang vector extensions (blurforge.interpolate falls back to OpenCV)"
#endif

typedef float v4f __attribute__((vector_size(16)));     /* one pixel's 4 channels */
typedef float v8f __attribute__((vector_size(32)));     /* two pixels' 4 channels, or one channel of 8 pixels */
typedef int v8i __attribute__((vector_size(32)));

INLINE v4f load4(const float *p)
{
    v4f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

INLINE v8f pair(const float *p, const float *q)
{
    return __builtin_shufflevector(load4(p), load4(q), 0, 1, 2, 3, 4, 5, 6, 7);
}

#define LANES 8      /* pixels of a row done together: their position arithmetic vectorises */

/* m ? a : b, lane by lane (m: all ones or zero; a macro, as no 32-byte vector is a parameter) */
#define select8(m, a, b) ((v8f)(((v8i)(a) & (m)) | ((v8i)(b) & ~(m))))

INLINE v8f get8(const float *p)
{
    v8f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

INLINE void put8(float *p, v8f v)
{
    __builtin_memcpy(p, &v, sizeof v);
}

/* 8 consecutive pixels' 4 channels (32 floats at p) -> channel-major, in registers (wide only) */
INLINE void load_block(const float *p, v8f out[4])
{
    const v8f r0 = get8(p), r1 = get8(p + 8), r2 = get8(p + 16), r3 = get8(p + 24);
    const v8f p01 = __builtin_shufflevector(r0, r1, 0, 4, 8, 12, 1, 5, 9, 13);
    const v8f q01 = __builtin_shufflevector(r0, r1, 2, 6, 10, 14, 3, 7, 11, 15);
    const v8f p23 = __builtin_shufflevector(r2, r3, 0, 4, 8, 12, 1, 5, 9, 13);
    const v8f q23 = __builtin_shufflevector(r2, r3, 2, 6, 10, 14, 3, 7, 11, 15);
    out[0] = __builtin_shufflevector(p01, p23, 0, 1, 2, 3, 8, 9, 10, 11);
    out[1] = __builtin_shufflevector(p01, p23, 4, 5, 6, 7, 12, 13, 14, 15);
    out[2] = __builtin_shufflevector(q01, q23, 0, 1, 2, 3, 8, 9, 10, 11);
    out[3] = __builtin_shufflevector(q01, q23, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* channel-major 4 x 8 -> 8 consecutive pixels' 4 channels at p (the inverse of load_block) */
INLINE void store_block(float *p, const v8f c[4])
{
    const v8f a0 = __builtin_shufflevector(c[0], c[1], 0, 8, 1, 9, 2, 10, 3, 11);
    const v8f a1 = __builtin_shufflevector(c[2], c[3], 0, 8, 1, 9, 2, 10, 3, 11);
    const v8f b0 = __builtin_shufflevector(c[0], c[1], 4, 12, 5, 13, 6, 14, 7, 15);
    const v8f b1 = __builtin_shufflevector(c[2], c[3], 4, 12, 5, 13, 6, 14, 7, 15);
    put8(p, __builtin_shufflevector(a0, a1, 0, 1, 8, 9, 2, 3, 10, 11));
    put8(p + 8, __builtin_shufflevector(a0, a1, 4, 5, 12, 13, 6, 7, 14, 15));
    put8(p + 16, __builtin_shufflevector(b0, b1, 0, 1, 8, 9, 2, 3, 10, 11));
    put8(p + 24, __builtin_shufflevector(b0, b1, 4, 5, 12, 13, 6, 7, 14, 15));
}

/* img sampled at 8 positions (mx, my), clamped to the picture; out: channel-major. The positions'
 * arithmetic is one vector op per step for all 8; with wide, each pair of lanes is interpolated in
 * one 8-wide vector (two pixels' 4 channels), then the result is transposed, nothing going through
 * memory; else each lane's 4 channels in one 4-wide vector. */
INLINE void sample_lanes(const Img4 *im, const v8f *mx, const v8f *my, v8f out[4], int wide)
{
    const v8f zero = {0}, wm = zero + (float)(im->w - 1), hm = zero + (float)(im->h - 1);
    v8f x = select8(*mx >= zero, *mx, zero), y = select8(*my >= zero, *my, zero);     /* also NaN -> 0 */
    x = select8(x <= wm, x, wm);
    y = select8(y <= hm, y, hm);
    const v8i x0 = __builtin_convertvector(x, v8i), y0 = __builtin_convertvector(y, v8i);
    const v8f fx = x - __builtin_convertvector(x0, v8f), fy = y - __builtin_convertvector(y0, v8f);
    const v8i dx = (x0 < im->w - 1) & 4, dy = (y0 < im->h - 1) & (4 * im->w), idx = 4 * (y0 * im->w + x0);
    if (!wide) {
        float o[4][LANES];
        for (int l = 0; l < LANES; l++) {
            const float *q = im->p + idx[l];
            v4f a = load4(q), b = load4(q + dx[l]), c = load4(q + dy[l]), d = load4(q + dy[l] + dx[l]);
            v4f top = a + fx[l] * (b - a), bot = c + fx[l] * (d - c), r = top + fy[l] * (bot - top);
            o[0][l] = r[0], o[1][l] = r[1], o[2][l] = r[2], o[3][l] = r[3];
        }
        for (int k = 0; k < 4; k++)
            out[k] = get8(o[k]);
        return;
    }
    v8f r[LANES / 2];
    for (int m = 0; m < LANES / 2; m++) {     /* two lanes' 4 channels in one 8-wide vector */
        const int l = 2 * m;
        const float *q = im->p + idx[l], *p = im->p + idx[l + 1];
        v8f a = pair(q, p), b = pair(q + dx[l], p + dx[l + 1]), c = pair(q + dy[l], p + dy[l + 1]);
        v8f d = pair(q + dy[l] + dx[l], p + dy[l + 1] + dx[l + 1]);
        v8f fxv = {fx[l], fx[l], fx[l], fx[l], fx[l + 1], fx[l + 1], fx[l + 1], fx[l + 1]};
        v8f fyv = {fy[l], fy[l], fy[l], fy[l], fy[l + 1], fy[l + 1], fy[l + 1], fy[l + 1]};
        v8f top = a + fxv * (b - a), bot = c + fxv * (d - c);
        r[m] = top + fyv * (bot - top);
    }
    /* lanes x channels -> channels x lanes */
    v8f p01 = __builtin_shufflevector(r[0], r[1], 0, 4, 8, 12, 1, 5, 9, 13);
    v8f q01 = __builtin_shufflevector(r[0], r[1], 2, 6, 10, 14, 3, 7, 11, 15);
    v8f p23 = __builtin_shufflevector(r[2], r[3], 0, 4, 8, 12, 1, 5, 9, 13);
    v8f q23 = __builtin_shufflevector(r[2], r[3], 2, 6, 10, 14, 3, 7, 11, 15);
    out[0] = __builtin_shufflevector(p01, p23, 0, 1, 2, 3, 8, 9, 10, 11);
    out[1] = __builtin_shufflevector(p01, p23, 4, 5, 6, 7, 12, 13, 14, 15);
    out[2] = __builtin_shufflevector(q01, q23, 0, 1, 2, 3, 8, 9, 10, 11);
    out[3] = __builtin_shufflevector(q01, q23, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* One side of a sub-frame at time t for the lanes at (xs, y): the point's own flow by fixed-point
 * iteration of p + t flow(p) = x from the flow at x (own, channel-major), then the colour+trust pack
 * at p. */
INLINE void side_lanes(const Img4 *flow, const Img4 *pack, const v8f own[4], const v8f *xsp, const v8f *yp,
                       float t, int iters, v8f v[4], v8f col[4])
{
    const v8f xs = *xsp, y = *yp;
    for (int k = 0; k < 4; k++)
        v[k] = own[k];
    for (int i = 0; i < iters; i++) {
        const v8f mx = xs - t * v[0], my = y - t * v[1];
        sample_lanes(flow, &mx, &my, v, wide);
    }
    const v8f mx = xs - t * v[0], my = y - t * v[1];
    sample_lanes(pack, &mx, &my, col, wide);
}

/* A block of 8 pixels of a row from 4-channel images, channel-major: whole blocks with two loads
 * and a transpose in registers (wide), else lane by lane (lanes past the row's end repeat its
 * last pixel). */
INLINE void gather_block(const float *img, Py_ssize_t row, int x0, int m, v8f out[4])
{
    if (wide && m == LANES) {
        load_block(img + 4 * (row + x0), out);
        return;
    }
    float o[4][LANES];
    for (int l = 0; l < LANES; l++) {
        const float *q = img + 4 * (row + x0 + (l < m ? l : m - 1));
        for (int k = 0; k < 4; k++)
            o[k][l] = q[k];
    }
    for (int k = 0; k < 4; k++)
        out[k] = get8(o[k]);
}

/* The first m pixels of a channel-major block into a 4-channel image (the inverse of gather_block) */
INLINE void scatter_block(float *img, Py_ssize_t row, int x0, int m, const v8f c[4])
{
    if (wide && m == LANES) {
        store_block(img + 4 * (row + x0), c);
        return;
    }
    float o[4][LANES];
    for (int k = 0; k < 4; k++)
        put8(o[k], c[k]);
    for (int l = 0; l < m; l++)
        for (int k = 0; k < 4; k++)
            img[4 * (row + x0 + l) + k] = o[k][l];
}

CLONES
static void substeps_rows(const Img4 *fa, const Img4 *pa, const Img4 *fb, const Img4 *pb, const float *chg,
                          float *out, float *vel, int n, int iters, int smear, int y0, int y1)
{
    const int w = fa->w;
    const float inv_n = 1.0f / (float)n, half_n = 0.5f * (float)n;
    const v8f zero = {0}, tiny = zero + 1e-3f, iota = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int y = y0; y < y1; y++) {
        const Py_ssize_t row = (Py_ssize_t)y * w;
        const v8f yv = zero + (float)y;
        for (int x0 = 0; x0 < w; x0 += LANES) {
            const int m = w - x0 < LANES ? w - x0 : LANES;     /* lanes past the row's end repeat its last pixel */
            float c[LANES], xs[LANES];
            for (int l = 0; l < LANES; l++) {
                c[l] = chg[row + x0 + (l < m ? l : m - 1)];
                xs[l] = (float)(x0 + (l < m ? l : m - 1));
            }
            int any = 0;
            for (int l = 0; l < LANES; l++)
                any |= c[l] != 0.0f;
            const v8f cv = get8(c), xv = m == LANES ? iota + (float)x0 : get8(xs);
            v8f oa[4], ob[4], ca[4], cb[4];
            gather_block(fa->p, row, x0, m, oa);
            gather_block(fb->p, row, x0, m, ob);
            gather_block(pa->p, row, x0, m, ca);
            gather_block(pb->p, row, x0, m, cb);
            v8f sum[3] = {zero, zero, zero}, sua = zero, sub = zero, svx = zero, svy = zero;
            for (int j = 1; any && j < n; j++) {
                const float t = (float)j * inv_n, s = 1.0f - t;
                v8f va[4], vb[4], sa[4], sb[4];
                side_lanes(fa, pa, oa, &xv, &yv, t, iters, va, sa);
                side_lanes(fb, pb, ob, &xv, &yv, s, iters, vb, sb);
                const v8f den = sa[3] * s + sb[3] * t;
                /* sub-pixel motion is already integrated well by the frames themselves */
                const v8f fast = select8(va[2] > vb[2], va[2], vb[2]);
                const v8i some = den > tiny;
                const v8f use = select8(some, fast * cv, zero);
                const v8f r = use / select8(some, den, tiny);
                const v8f wa = sa[3] * r * s, wb = sb[3] * r * t;
                for (int k = 0; k < 3; k++)
                    sum[k] += sa[k] * wa + sb[k] * wb;
                sua += use * s;
                sub += use * t;
                svx += va[0] * wa - vb[0] * wb;
                svy += va[1] * wa - vb[1] * wb;
            }
            v8f o[4];
            if (smear) {    /* the smear's input: the sum of the deltas plus the ends, and the velocity */
                for (int k = 0; k < 3; k++)
                    o[k] = sum[k] - ca[k] * sua - cb[k] * sub + (ca[k] + cb[k]) * half_n;
                o[3] = cv;
                const v8f ea = 0.5f * oa[2] * ca[3] * cv, eb = -0.5f * ob[2] * cb[3] * cv;
                const v8f vxo = (svx + oa[0] * ea + ob[0] * eb) * inv_n, vyo = (svy + oa[1] * ea + ob[1] * eb) * inv_n;
                float *v = vel + 2 * (row + x0);
                if (wide && m == LANES) {
                    put8(v, __builtin_shufflevector(vxo, vyo, 0, 8, 1, 9, 2, 10, 3, 11));
                    put8(v + 8, __builtin_shufflevector(vxo, vyo, 4, 12, 5, 13, 6, 14, 7, 15));
                } else {
                    for (int l = 0; l < m; l++)
                        v[2 * l] = vxo[l], v[2 * l + 1] = vyo[l];
                }
            } else {
                for (int k = 0; k < 3; k++)
                    o[k] = (sum[k] - ca[k] * sua - cb[k] * sub) * inv_n;
                o[3] = zero;
            }
            scatter_block(out, row, x0, m, o);
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
            const Py_ssize_t row = (Py_ssize_t)y * w;
            float c[LANES], xs[LANES], vx[LANES], vy[LANES];
            for (int l = 0; l < LANES; l++) {
                const Py_ssize_t i = row + x0 + (l < m ? l : m - 1);
                c[l] = chg[i];
                xs[l] = (float)(x0 + (l < m ? l : m - 1));
                vx[l] = vel[2 * i], vy[l] = vel[2 * i + 1];
            }
            int any = 0;
            for (int l = 0; l < LANES; l++)
                any |= c[l] != 0.0f;
            float *o = dst + 4 * (row + x0);
            if (last && !any) {     /* the delta is 0 where the picture does not change */
                for (int k = 0; k < 4 * m; k++)
                    o[k] = 0.0f;
                continue;
            }
            if (!any) {     /* no velocity where nothing changes: the stage samples src where it is */
                __builtin_memcpy(o, src->p + 4 * (row + x0), 4 * m * sizeof(float));
                continue;
            }
            const v8f zero = {0}, xv = get8(xs), yv = zero + (float)y, ex = d * get8(vx), ey = d * get8(vy);
            const v8f lxv = xv - ex, lyv = yv - ey, hxv = xv + ex, hyv = yv + ey;
            v8f lo[4], hi[4], r[4];
            sample_lanes(src, &lxv, &lyv, lo, wide);
            sample_lanes(src, &hxv, &hyv, hi, wide);
            if (last) {         /* the delta: the smeared sum less the ends, where the picture changes */
                v8f ca[4], cb[4];
                const v8f cv = get8(c);
                gather_block(pa, row, x0, m, ca);
                gather_block(pb, row, x0, m, cb);
                for (int k = 0; k < 3; k++)
                    r[k] = (0.5f * (lo[k] + hi[k]) * inv_n - 0.5f * (ca[k] + cb[k])) * cv;
                r[3] = zero;
            } else {
                for (int k = 0; k < 4; k++)
                    r[k] = 0.5f * (lo[k] + hi[k]);
            }
            scatter_block(dst, row, x0, m, r);
        }
    }
}

/* Odd windows' end half intervals: out = the trapezoid over s = j / 2m (j = 1 .. m, the last at half
 * weight) of (the frame moved on by s along its flow, where trusted) - the frame, times 1/2. */
CLONES
static void half_end_rows(const Img4 *flow, const Img4 *pack, float *out, int m, int iters, int y0, int y1)
{
    const int w = flow->w;
    const float inv_m = 1.0f / (float)m;
    const v8f zero = {0}, half = zero + 0.5f;
    for (int y = y0; y < y1; y++) {
        const Py_ssize_t row = (Py_ssize_t)y * w;
        const v8f yv = zero + (float)y;
        for (int x0 = 0; x0 < w; x0 += LANES) {
            const int m8 = w - x0 < LANES ? w - x0 : LANES;     /* lanes past the row's end repeat its last pixel */
            float xs[LANES];
            for (int l = 0; l < LANES; l++)
                xs[l] = (float)(x0 + (l < m8 ? l : m8 - 1));
            const v8f xv = get8(xs);
            v8f own[4], here[4], sum[4] = {zero, zero, zero, zero};
            gather_block(flow->p, row, x0, m8, own);
            gather_block(pack->p, row, x0, m8, here);
            for (int j = 1; j <= m; j++) {
                v8f v[4], col[4];
                side_lanes(flow, pack, own, &xv, &yv, 0.5f * (float)j * inv_m, iters, v, col);
                const v8f use = select8(col[3] > half, zero + (j == m ? 0.25f : 0.5f) * inv_m, zero);
                for (int k = 0; k < 3; k++)
                    sum[k] += (col[k] - here[k]) * use;
            }
            scatter_block(out, row, x0, m8, sum);
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
        for (int x0 = 0; x0 < w; x0 += LANES) {
            const int m = w - x0 < LANES ? w - x0 : LANES;     /* lanes past the row's end repeat its last pixel */
            const Py_ssize_t row = (Py_ssize_t)y * w;
            float xs[LANES];
            for (int l = 0; l < LANES; l++)
                xs[l] = (float)(x0 + (l < m ? l : m - 1));
            v8f own[4], back[4];
            gather_block(self->p, row, x0, m, own);
            const v8f zero = {0}, txv = get8(xs) + own[0], tyv = (zero + (float)y) + own[1];
            sample_lanes(other, &txv, &tyv, back, wide);
            /* the test on all 8 lanes at once: |fx + back| < fb_px (squared) and landing inside */
            const v8f ex = own[0] + back[0], ey = own[1] + back[1];
            const v8i good = (ex * ex + ey * ey < zero + fb_px * fb_px) & (txv >= zero) & (txv <= zero + (float)(w - 1))
                             & (tyv >= zero) & (tyv <= zero + (float)(h - 1));
            float g[LANES];
            const v8f gv = select8(good, zero + 1.0f, zero);
            __builtin_memcpy(g, &gv, sizeof gv);
            if (m == LANES)
                put8(ok + row + x0, gv);
            for (int l = 0; l < m; l++) {
                const Py_ssize_t i = row + x0 + l;
                pack[4 * i] = img[3 * i], pack[4 * i + 1] = img[3 * i + 1], pack[4 * i + 2] = img[3 * i + 2];
                pack[4 * i + 3] = g[l];
                if (m < LANES)
                    ok[i] = g[l];
            }
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

static PyObject *half_end(PyObject *self, PyObject *args)
{
    Py_buffer b[3];
    int h, w, m, iters, y0 = 0, y1 = -1;
    if (!PyArg_ParseTuple(args, "y*y*w*iiii|ii:half_end", &b[0], &b[1], &b[2], &h, &w, &m, &iters, &y0, &y1))
        return NULL;
    static const char *names[3] = {"flow4", "pack", "out"};
    PyObject *result = NULL;
    y1 = y1 < 0 ? h : y1;
    int ok = h > 0 && w > 0 && m >= 1 && iters >= 0 && (Py_ssize_t)h * w < INT_MAX / 8 && 0 <= y0 && y0 <= y1 && y1 <= h;
    if (!ok)
        PyErr_SetString(PyExc_ValueError, "half_end: h, w, m must be positive (h w < 2^28), 0 <= y0 <= y1 <= h");
    for (int k = 0; ok && k < 3; k++)
        ok = check(&b[k], (Py_ssize_t)h * w * 4, names[k]);
    if (ok) {
        Img4 flow = {b[0].buf, w, h}, pack = {b[1].buf, w, h};
        Py_BEGIN_ALLOW_THREADS
        half_end_rows(&flow, &pack, b[2].buf, m, iters, y0, y1);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    for (int k = 0; k < 3; k++)
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
    {"half_end", half_end, METH_VARARGS,
     "half_end(flow4, pack, out, h, w, m, iters[, y0, y1])\n\n"
     "The correction of a half interval beyond a frame: out (r, g, b, 0) = the trapezoid over s = j / 2m\n"
     "(j = 1 .. m) of the pack's colour moved on by s along flow4 (x, y, -, -; outward in time), where\n"
     "its trust channel exceeds 1/2, less the colour where it is. All float32 h x w x 4; rows y0 .. y1."},
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

PyMODINIT_FUNC PyInit__subframe(void)
{
#if defined(RUNTIME_AVX2)
    __builtin_cpu_init();
    wide = __builtin_cpu_supports("avx2");
#elif defined(__AVX__)
    wide = 1;
#endif
    return PyModule_Create(&module);
}
